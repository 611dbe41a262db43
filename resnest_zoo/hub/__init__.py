"""Models in the Hugging Face layout: a folder (or Hub repository) of ``model.safetensors``, ``config.json`` and a
model card, for one's own fine-tuned models and the twelve published ones alike.

* :mod:`.format`: ``config.json`` -- its fields, its format version, the names of the files;
* :mod:`.card`: the model card (``README.md``);
* :mod:`.save`: ``save_pretrained``, ``push_to_hub``;
* :mod:`.pretrained`: ``from_pretrained``.

Named ``hub`` (not after a public function) so that ``resnest_zoo.load``/``export``/... stay the functions.
This file imports nothing, so the command line can read :data:`HUB_PREFIX` without importing torch.
"""

HUB_PREFIX = "hf:"
"""``hf:org/name`` always means a Hugging Face Hub repository, even where a folder of that name exists."""
