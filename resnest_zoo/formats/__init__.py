"""What the files this package writes hold, and how they are read back: the one owner of each format.

* :mod:`.saved_model`: a saved model's ``config.json`` (the Hugging Face layout: ``config.json``,
  ``model.safetensors``, ``README.md``) -- its fields, its format version, the file names beside it;
* :mod:`.runtime`: the metadata an exported ONNX / OpenVINO file carries (classes, palette, preprocessing,
  source checkpoint) and the names of its input and output tensors.

Leaf modules: they depend on the model description (:mod:`resnest_zoo.config`, :mod:`resnest_zoo.catalogue`) and
nothing above it, so that the layers that read these files (weights, deploy) and those that write them share them.
"""
