"""Getting checkpoint files and reading them, one module per job: ``sources`` (where from, in which order; the
public ``download``), ``obtain`` (the locked download: checks, then the file into place), ``transfer`` (bytes over
HTTP or from a folder), ``release`` (the publisher's size and digest), ``cache`` (the one owner of the cache
layout), ``integrity`` (digests and records), ``checkpoint`` (reading safely, strict loading), ``model_file``
(safetensors copies and when to use them), ``audit`` (``cache verify``)."""
