"""Who runs the network inside ``predict``: PyTorch itself, ONNX Runtime or OpenVINO.

``model.predict(images, backend=...)``, ``resnest_zoo.load(..., backend=...)`` and ``resnest-zoo predict
--backend ...`` share everything but the forward pass: the preprocessing, sliding windows, test-time
augmentation and the :class:`~resnest_zoo.Prediction` are the engine's (:mod:`resnest_zoo.inference.engine`).

A runtime backend is wrapped in a :class:`RuntimeModel`: an ``nn.Module`` without parameters whose forward hands
the normalised images to the runtime and returns its float32 logits, so the engine drives it as it drives a
segmentor. The precision is asked the way it is asked of PyTorch: ``predict(..., dtype=torch.bfloat16)`` (which
runs the forward under ``torch.autocast``) compiles and runs the model in bfloat16 (OpenVINO only).

* ``"onnxruntime"``: one ``InferenceSession`` (CPU provider), dynamic shapes, float32.
* ``"openvino"``: the model compiled for the CPU once per precision (``f32``, ``bf16`` where the CPU has
  AVX512-BF16/AMX, ``f16`` where it has AVX512-FP16/AMX-FP16), with dynamic shapes.

Both use ``torch.get_num_threads()`` threads unless told otherwise, so one setting governs every backend, and
run on the CPU (``channels_last``, a PyTorch memory layout, changes nothing there).
A PyTorch segmentor asked for a runtime backend is exported in memory (:func:`~resnest_zoo.export_onnx`'s graph,
BatchNorm folded; seconds for a ResNeSt-101) the first time, and that runtime model is kept for the segmentor
until its weights change.
"""
from __future__ import annotations

import os
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..devices import precision_name
from ..formats.runtime import FORMAT_KEY, INPUT_NAME, INT8, RuntimeMetadata, check_same_model, parse_metadata
from .openvino import openvino_core
from .optional import require
from ..errors import RuntimeFileError
from ..options import BACKENDS
from ..inference.engine import predict

if TYPE_CHECKING:
    from ..inference.prediction import Prediction

__all__ = [
    "RuntimeBackend",
    "OnnxRuntimeBackend",
    "OpenVINOBackend",
    "RuntimeModel",
    "with_backend",
    "check_backend",
    "check_load_options",
    "runtime_dtypes",
    "runtime_half_precision",
]


def check_backend(backend: Any) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a ``ValueError`` listing them."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return backend


# ---------------------------------------------------------------------------------------------- runtimes
class RuntimeBackend(ABC):
    """A compiled network: float32 ``(N, 3, H, W)`` images in, float32 logits out, in a given precision."""

    name: ClassVar[str]
    metadata: RuntimeMetadata

    @abstractmethod
    def run(self, images: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        """Logits for C-contiguous float32 ``images``, computed in ``dtype``."""

    @classmethod
    @abstractmethod
    def dtypes(cls) -> tuple[torch.dtype, ...]:
        """The precisions this runtime can compute in on this machine."""

    def check_dtype(self, dtype: torch.dtype) -> None:
        if dtype not in self.dtypes():
            names = ", ".join(precision_name(d) for d in self.dtypes())
            hint = "; OpenVINO (backend='openvino') runs bfloat16 on CPUs with AVX512-BF16 or AMX" \
                if self.name == "onnxruntime" else ""
            raise ValueError(f"the {self.name} backend computes in {names} on this machine, not "
                             f"{precision_name(dtype)}{hint}; pass dtype=None for float32")


def _threads(threads: int | None) -> int:
    value = torch.get_num_threads() if threads is None else threads
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return value


def _check_file(path: Path, suffix: str, backend: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"runtime file {str(path)!r} does not exist")
    if path.suffix.lower() != suffix:
        raise RuntimeFileError(f"the {backend} backend reads {suffix} files; {path} is not one")


class OnnxRuntimeBackend(RuntimeBackend):
    """An ONNX Runtime ``InferenceSession`` on the CPU provider (float32), from a file or ONNX bytes."""

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str] | bytes, *, threads: int | None = None) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")
        where = "the exported model" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes):
            _check_file(Path(model), ".onnx", self.name)
            model = os.fspath(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types derive from Exception only
            raise RuntimeFileError(f"{where} is not an ONNX model ONNX Runtime can load: {exc}") from None
        self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, where=where)

    @classmethod
    def dtypes(cls) -> tuple[torch.dtype, ...]:
        return (torch.float32,)

    def run(self, images: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        self.check_dtype(dtype)
        return self.session.run(None, {INPUT_NAME: images})[0]


class OpenVINOBackend(RuntimeBackend):
    """An OpenVINO model (IR ``.xml``, ``.onnx`` file, or ``openvino.Model``), compiled for the CPU once per
    precision with dynamic shapes."""

    name = "openvino"
    _PRECISIONS = {torch.float32: ("f32", None), torch.bfloat16: ("bf16", "BF16"), torch.float16: ("f16", "FP16")}

    def __init__(self, model: Any, *, threads: int | None = None) -> None:
        require("openvino", "the openvino backend")
        self.core = openvino_core()
        self.threads = _threads(threads)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            where = str(path)
            if not path.is_file():
                raise FileNotFoundError(f"runtime file {where!r} does not exist")
            if path.suffix.lower() not in (".xml", ".onnx") or not _looks_like(path):
                raise RuntimeFileError(f"{where} is neither an OpenVINO IR (.xml + .bin) nor an ONNX model")
            try:
                model = self.core.read_model(where)
            except RuntimeError as exc:
                raise RuntimeFileError(f"{where} is not a model OpenVINO can read: {str(exc).strip()}") from None
            # resnest_zoo's IR keeps its metadata under "resnest_zoo"; an ONNX file read by OpenVINO under "framework"
            section = FORMAT_KEY if path.suffix.lower() == ".xml" else "framework"
        else:
            where, section = "the exported model", FORMAT_KEY
        self.model = model
        info = model.get_rt_info()
        values = info[section] if section in info else {}
        self.metadata = parse_metadata({k: (v.astype(str) if hasattr(v, "astype") else str(v))
                                        for k, v in values.items()}, where=where)
        self._compiled: dict[torch.dtype, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def dtypes(cls) -> tuple[torch.dtype, ...]:
        require("openvino", "the openvino backend")
        capabilities = set(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        return tuple(d for d, (_, needs) in cls._PRECISIONS.items() if needs is None or needs in capabilities)

    def check_dtype(self, dtype: torch.dtype) -> None:
        if self.metadata.precision == INT8 and dtype != torch.float32:
            raise ValueError(f"this OpenVINO model is quantized to int8 (its layers left in floating point run in "
                             f"float32), so it cannot compute in {precision_name(dtype)}; pass dtype=None (drop "
                             f"--fp16), or export the model without --int8 to run it in {precision_name(dtype)}")
        super().check_dtype(dtype)

    def compiled(self, dtype: torch.dtype) -> Any:
        """The model compiled for ``dtype`` (compiled at the first call, then kept)."""
        if dtype not in self._compiled:
            self.check_dtype(dtype)
            hint = self._PRECISIONS[dtype][0]
            compiled = self.core.compile_model(self.model, "CPU", {
                "INFERENCE_PRECISION_HINT": hint,  # explicit: on bf16-capable CPUs OpenVINO defaults to bf16
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
            })
            self._compiled[dtype] = (compiled, compiled.create_infer_request())
        return self._compiled[dtype]

    def run(self, images: np.ndarray, dtype: torch.dtype) -> np.ndarray:
        compiled, request = self.compiled(dtype)
        with self._lock:  # one infer request per precision, reused
            request.infer({0: images})
            return request.get_output_tensor(0).data.copy()  # the request's buffer is reused by the next call


def _looks_like(path: Path) -> bool:
    """A cheap check of the first bytes, so that OpenVINO never tries its other frontends on a stray file:
    an ONNX model starts with its ``ir_version`` field (protobuf tag 0x08), an IR with XML."""
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip()
    return head[:1] == b"\x08" if path.suffix.lower() == ".onnx" else head[:1] == b"<"


_RUNTIMES: dict[str, type[RuntimeBackend]] = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}


def runtime_dtypes(backend: str) -> tuple[torch.dtype, ...]:
    """The precisions the runtime ``backend`` computes in on this machine (no model needed)."""
    return _RUNTIMES[_runtime_name(backend)].dtypes()


def runtime_half_precision(backend: str) -> torch.dtype:
    """The half precision the runtime ``backend`` computes in on this CPU (what ``--fp16`` means with it):
    bfloat16, or float16 where only that is there; a ``ValueError`` saying why where it has neither."""
    half = [dtype for dtype in (torch.bfloat16, torch.float16) if dtype in runtime_dtypes(backend)]
    if half:
        return half[0]
    if backend == "onnxruntime":
        raise ValueError("the onnxruntime backend computes in float32 only; --backend openvino runs bfloat16 on "
                         "CPUs with AVX512-BF16 or AMX")
    raise ValueError(f"the {backend} backend computes in float32 only on this CPU (half precision needs "
                     "AVX512-BF16, AMX or AVX512-FP16)")


# ------------------------------------------------------------------------------------------- the module
class RuntimeModel(nn.Module):
    """A segmentor whose network runs in ONNX Runtime or OpenVINO: ``model(images)`` returns float32 logits
    ``(N, K, H, W)`` at the input size, ``model.predict(...)`` is :func:`resnest_zoo.inference.engine.predict`.

    ``config`` is the :class:`~resnest_zoo.config.ModelConfig` (classes, palette, preprocessing), ``entry`` the
    catalogue record or None, ``backend`` the :class:`RuntimeBackend`, ``metadata`` the file's
    :class:`~resnest_zoo.deploy.metadata.RuntimeMetadata`. It runs on the CPU; moving it elsewhere is refused.
    """

    def __init__(self, backend: RuntimeBackend, config: ModelConfig, *, entry: Any = None) -> None:
        super().__init__()
        self.backend = backend
        self.config = config
        self.entry = entry
        self.metadata = backend.metadata
        self.num_classes = config.num_classes
        self.eval()

    @classmethod
    def from_segmentor(cls, model: nn.Module, backend: str, *, threads: int | None = None) -> RuntimeModel:
        """``model`` exported in memory (BatchNorm folded, dynamic shapes) and loaded into ``backend``."""
        from .onnx import model_config, onnx_bytes

        config = model_config(model)
        name = _runtime_name(backend)
        require(name, f"the {name} backend")  # before the export: a missing runtime costs no time
        if name == "openvino":
            from .openvino import openvino_model

            runtime: RuntimeBackend = OpenVINOBackend(openvino_model(model), threads=threads)
        else:
            runtime = OnnxRuntimeBackend(onnx_bytes(model), threads=threads)
        return cls(runtime, config, entry=getattr(model, "entry", None))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], backend: str, *, config: ModelConfig, entry: Any = None,
                  threads: int | None = None, source_sha256: str | None = None) -> RuntimeModel:
        """Load a file written by :func:`~resnest_zoo.export_onnx` / :func:`~resnest_zoo.export_openvino` into
        ``backend``, checked to hold the model ``config`` describes (and, if given, made from the checkpoint
        with ``source_sha256``): :class:`~resnest_zoo.RuntimeFileError` for a file that is not ours,
        :class:`~resnest_zoo.RuntimeModelMismatchError` for one of another model."""
        runtime = _RUNTIMES[_runtime_name(backend)](path, threads=threads)
        check_same_model(runtime.metadata, config, where=str(path), source_sha256=source_sha256)
        return cls(runtime, config, entry=entry)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits of normalised ``images`` ``(N, 3, H, W)``; computed in bfloat16/float16 when called
        under ``torch.autocast("cpu", dtype=...)`` (as ``predict(..., dtype=...)`` does)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected normalised images N x 3 x H x W, got shape {tuple(images.shape)}")
        array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.backend.run(array, _autocast_dtype()))

    def predict(self, images: Any, *, backend: str | None = None, **options: Any) -> Prediction | list[Prediction]:
        """Segment images as :meth:`Segmentor.predict <resnest_zoo.Segmentor.predict>` does, the network run by
        this backend (``backend``, if given, must name it); see :func:`resnest_zoo.inference.engine.predict` for
        the options."""
        if backend is not None:
            with_backend(self, backend)  # another backend: a ValueError saying how to get it
        return predict(self, images, **options)

    def to(self, *args: Any, **kwargs: Any) -> RuntimeModel:
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"the {self.backend.name} backend runs on the CPU; it cannot move to {device}. "
                             f"Use the PyTorch backend (backend='torch') for {torch.device(device).type}")
        return self

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def precision(self) -> str:
        """The precision of the network's weights: ``"int8"`` for a quantized OpenVINO file (its
        :class:`~resnest_zoo.formats.runtime.QuantizationReport` is ``metadata.quantization``), else ``"float32"``."""
        return self.metadata.precision

    def extra_repr(self) -> str:
        name = f", entry={self.entry.name!r}" if self.entry is not None else ""
        return f"backend={self.backend.name!r}, precision={self.precision!r}, num_classes={self.num_classes}{name}"


def _runtime_name(backend: str) -> str:
    if check_backend(backend) == "torch":
        raise ValueError("backend='torch' is the segmentor itself, not a runtime model")
    return backend


def _autocast_dtype() -> torch.dtype:
    try:
        enabled = torch.is_autocast_enabled("cpu")
        return torch.get_autocast_dtype("cpu") if enabled else torch.float32
    except TypeError:  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else torch.float32


def check_load_options(backend: str, *, runtime_file: Any, device: Any, weights: Any, freeze: Any,
                       auxiliary_head: bool) -> None:
    """``load(..., backend=..., runtime_file=...)``'s options that do not go together, refused before any work."""
    check_backend(backend)
    if backend == "torch":
        if runtime_file is not None:
            raise ValueError("runtime_file is run by a runtime backend: pass backend='onnxruntime' or 'openvino' "
                             "with it (backend='torch' loads the checkpoint)")
        return
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"the {backend} backend runs on the CPU, got device={device!r}; use backend='torch' "
                         f"for {torch.device(device).type}")
    if freeze or auxiliary_head:
        raise ValueError(f"freeze= and auxiliary_head= prepare training, and the {backend} backend runs inference "
                         f"only; use backend='torch' to fine-tune")
    if runtime_file is not None and weights is not None:
        raise ValueError("runtime_file holds the weights already; pass either weights= (exported in memory) or "
                         "runtime_file=, not both")


# --------------------------------------------------------------------------------------------- the engine
_CONVERTED: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, RuntimeModel]]] = weakref.WeakKeyDictionary()


def _weights_state(model: nn.Module) -> tuple:
    """Changes whenever a tensor of ``model`` is modified in place, replaced, or moved."""
    return tuple((id(t), t._version, t.data_ptr(), t.dtype) for t in model.state_dict(keep_vars=True).values())


def with_backend(model: nn.Module, backend: str) -> nn.Module:
    """The module ``predict`` runs for ``backend``: ``model`` itself for ``"torch"`` (or for a
    :class:`RuntimeModel` of that backend), else ``model`` in that runtime (exported once, kept until its
    weights change)."""
    name = check_backend(backend)
    if isinstance(model, RuntimeModel):
        if name != model.backend.name:
            raise ValueError(f"this model runs on {model.backend.name} (it was loaded with backend="
                             f"{model.backend.name!r}); load it with backend={name!r} to run it there")
        return model
    if name == "torch":
        return model
    state = _weights_state(model)
    cached = _CONVERTED.setdefault(model, {}).get(name)
    if cached is None or cached[0] != state:
        _CONVERTED[model][name] = (state, RuntimeModel.from_segmentor(model, name))
    return _CONVERTED[model][name][1]
