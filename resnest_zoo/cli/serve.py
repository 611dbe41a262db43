"""``resnest-zoo serve``: the models behind a URL -- an HTTP API, a page for people, metrics and probes.

The service is :func:`resnest_zoo.serve` (docs/serving.md); this module adds the command's options, whose
defaults are :mod:`resnest_zoo.serving.settings`'s, and checks the device, precision and backend as ``predict``
does, before anything loads.
"""
from __future__ import annotations

import argparse

from ..naming import MODEL_NAME_HELP
from ..options import BACKENDS
from ..serving.settings import DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_PORT, default
from .common import CommandError, add_cache_dir, at_least, model_name
from .exit_codes import ExitCode
from .predict import BACKEND_HELP, DEVICE_HELP, FP16_HELP, _precision

__all__ = ["register"]


def _number(minimum: float, *, strictly: bool = False):
    """An argparse type: a number >= ``minimum`` (> with ``strictly``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > minimum if strictly else value >= minimum) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strictly else '>='} {minimum:g}, got {text!r}")
        return value
    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535 (0: any free port), got {text!r}")
    return value


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..deploy.optional import require
    from ..devices import resolve_device

    require("fastapi", "resnest-zoo serve")  # before anything else: the extra to install, as one line
    if args.backend == "torch":
        device = resolve_device(args.device)  # DeviceNotAvailableError (exit 2) before any loading
    elif args.device and resolve_device(args.device).type != "cpu":
        raise CommandError(f"--backend {args.backend} runs on the CPU; drop --device {args.device}, or use "
                           f"--backend torch for {args.device}", ExitCode.USAGE)
    else:
        device = resolve_device("cpu")
    dtype = _precision(args, device)
    models: list[str] | dict[str, object] = [str(name) for name in args.model]
    if args.runtime_file is not None:
        models = _runtime_file_model(args)
    from ..serving import serve

    serve(models, host=args.host,
          port=args.port, grace=args.grace, device=device if args.backend == "torch" else None, dtype=dtype,
          backend=args.backend, cache_dir=args.cache_dir, max_batch_size=args.max_batch_size,
          max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, timeout=args.timeout,
          max_upload_mb=args.max_upload_mb, api_key=args.api_key, cors_origins=tuple(args.cors_origin or ()))
    return ExitCode.OK


def _runtime_file_model(args: argparse.Namespace) -> dict[str, object]:
    """``--runtime-file``: the one catalogue model ``-m`` names, its network read from the file (an ``export
    --format onnx|openvino [--int8]`` file), loaded here, checked to be that model's."""
    from ..api import load_model

    if args.backend == "torch":
        raise CommandError("--runtime-file is run by --backend onnxruntime or openvino; add one of them", ExitCode.USAGE)
    if len(args.model) != 1 or args.model[0].saved is not None:
        raise CommandError("--runtime-file holds one catalogue model's network: give that model once, -m "
                           "SEGMENTOR/DATASET", ExitCode.USAGE)
    name = args.model[0]
    return {str(name): load_model(name, backend=args.backend, runtime_file=args.runtime_file, progress=False)}


def register(add) -> None:
    """Add the ``serve`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("serve", "Serve models over HTTP: POST an image, get its mask (PNG, overlay or JSON); a page to try it "
                     "in a browser at /, Prometheus metrics at /metrics, probes at /healthz and /readyz, the API at "
                     "/docs. Requests of one model and one input size are batched; a full queue answers 503 at "
                     "once. SIGTERM or Ctrl-C finishes the requests in flight and exits 0. Needs pip install "
                     "\"resnest-zoo[serve]\".")
    p.add_argument("-m", "--model", required=True, action="append", type=model_name, metavar="MODEL",
                   help=f"a model to serve, repeatable: {MODEL_NAME_HELP}")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
                        "interface -- then set an API key)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--fp16", action="store_true", help=FP16_HELP)
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help=BACKEND_HELP)
    p.add_argument("--runtime-file", metavar="FILE",
                   help="with --backend onnxruntime/openvino and one -m SEGMENTOR/DATASET: serve the network of this "
                        "file (resnest-zoo export --format onnx / openvino, INT8 included) instead of exporting the "
                        "checkpoint")
    p.add_argument("--max-batch-size", type=at_least(1), default=default("max_batch_size"), metavar="N",
                   help=f"images of one model and input size per forward pass (default {default('max_batch_size')})")
    p.add_argument("--max-wait-ms", type=_number(0), default=default("max_wait_ms"), metavar="MS",
                   help=f"how long the oldest waiting image waits for companions (default {default('max_wait_ms'):g})")
    p.add_argument("--max-queue", type=at_least(1), default=default("max_queue"), metavar="N",
                   help=f"requests per model admitted and not yet running; one more gets 503 with Retry-After "
                        f"(default {default('max_queue')})")
    p.add_argument("--timeout", type=_number(0, strictly=True), default=default("timeout"), metavar="SECONDS",
                   help=f"longest wait from arrival to the forward pass; then 504 (default {default('timeout'):g})")
    p.add_argument("--max-upload-mb", type=_number(0, strictly=True), default=default("max_upload_mb"), metavar="MB",
                   help=f"largest request body in MiB; larger ones get 413 before they are read "
                        f"(default {default('max_upload_mb'):g})")
    p.add_argument("--api-key", metavar="KEY",
                   help="require Authorization: Bearer KEY on every endpoint but /healthz and /readyz (default "
                        "$RESNEST_ZOO_API_KEY, which, unlike this option, other users of the machine cannot see)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="let pages of ORIGIN (https://app.example.com) call the API from a browser; repeatable "
                        "(default: none)")
    p.add_argument("--grace", type=_number(0), default=DEFAULT_GRACE, metavar="SECONDS",
                   help=f"on SIGTERM or Ctrl-C, how long requests in flight may take before they are cancelled "
                        f"(default {DEFAULT_GRACE:g})")
    add_cache_dir(p)
    p.set_defaults(handler=_cmd_serve)
