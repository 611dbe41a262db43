"""Saving models in the Hugging Face layout -- a folder (or Hub repository) of ``model.safetensors``, ``config.json``
and a model card -- and sharing them, for one's own fine-tuned models and the twelve published ones alike.

* :mod:`.save`: ``save_pretrained``, ``push_to_hub`` (what :class:`~resnest_zoo.Segmentor`'s methods call);
* :mod:`.card`: the model card (``README.md``).

The layout and ``config.json`` are :mod:`resnest_zoo.formats.saved_model`'s; reading a saved model back is
:mod:`resnest_zoo.weights.saved`'s. Named ``hub`` (not after a public function) so that ``resnest_zoo.load`` and
the other public functions stay functions.
"""
