"""Getting checkpoint files, checking them and reading them: ``sources`` (where from; ``resolve``), ``obtain`` (the
locked download and the rules of trust, the publisher's digest included), ``transfer`` (bytes over HTTP or from a
folder), ``cache`` (the cache layout), ``integrity`` (digests), ``checkpoint`` (reading safely), ``model_file``
(safetensors copies), ``saved`` (saved models), ``audit`` (``cache verify``)."""
