"""Getting checkpoint files, checking them and reading them: ``sources`` (where from; ``resolve``), ``obtain`` (the
locked download and its checks), ``transfer`` (bytes over HTTP or from a folder), ``release`` (the publisher's size and
digest), ``cache`` (the cache layout), ``integrity`` (digests and records), ``checkpoint`` (reading safely),
``model_file`` (safetensors copies), ``saved`` (saved models), ``audit`` (``cache verify``)."""
