"""OpenVINO IR export (``.xml`` + ``.bin``) of a segmentor, made from the verified ONNX graph.

>>> resnest_zoo.export_openvino(model, "deeplabv3plus_cityscapes.xml")        # doctest: +SKIP

The network is the ONNX export's (:mod:`resnest_zoo.deploy.onnx`: ``model(images)``, dynamic batch, height and
width), read by ``openvino.Core.read_model`` (not ``openvino.convert_model``, which sends usage telemetry to
Intel unless the user opted out) and written by ``openvino.save_model`` with float32 weights
(``compress_to_fp16=False``: the precision is chosen when the model is compiled, not baked into the file). The
metadata is the ONNX file's, in the IR's ``rt_info`` under ``resnest_zoo``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from torch import nn

from ..formats.runtime import FORMAT_KEY
from ..options import OPSET
from .onnx import export_file, onnx_bytes, runtime_metadata
from .optional import require

__all__ = ["export_openvino", "openvino_model", "openvino_core", "save_ir"]

_CORE: list[Any] = []
_CORE_LOCK = threading.Lock()


def openvino_core() -> Any:
    """The process's one ``openvino.Core``, made at the first call: every OpenVINO read and compile of this package
    goes through it (a second ``Core`` made after NNCF's accuracy control crashed the process)."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(require("openvino", "OpenVINO").Core())
        return _CORE[0]


def openvino_model(model: nn.Module, **options) -> object:
    """The ``openvino.Model`` of :func:`export_openvino` (same keyword arguments), metadata included, in memory."""
    require("openvino", "OpenVINO export")
    metadata = runtime_metadata(model, **options)
    converted = openvino_core().read_model(onnx_bytes(model, **options))
    for key, value in metadata.items():
        converted.set_rt_info(value, [FORMAT_KEY, key])
    return converted


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    dynamic: bool = True,
    fold_batchnorm: bool = True,
    source_sha256: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``model`` as OpenVINO IR: ``path`` (``.xml``, the graph) and the ``.bin`` beside it (the weights).

    The arguments are :func:`~resnest_zoo.export_onnx`'s (the IR is converted from that ONNX graph); returns the
    ``.xml`` path. Needs ``pip install "resnest-zoo[openvino]"`` (OpenVINO, and onnx for the export).
    """
    options = dict(opset=opset, dynamic=dynamic, fold_batchnorm=fold_batchnorm, source_sha256=source_sha256,
                   input_size=input_size)

    return export_file(model, path, ".xml", lambda staged: save_ir(openvino_model(model, **options), staged), options,
                       needs=("openvino", "onnx"), siblings=(".bin",))


def save_ir(converted: Any, staged: Path) -> None:
    """Write the ``openvino.Model`` ``converted`` as ``staged`` (the ``.xml``) and the ``.bin`` beside it, weights as
    they are (``compress_to_fp16=False``); for :func:`~resnest_zoo.deploy.onnx.export_file`'s ``write``."""
    xml = staged.with_name(staged.name + ".xml")  # OpenVINO insists on the suffix; the .bin follows its name
    try:
        require("openvino", "OpenVINO export").save_model(converted, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), staged.with_suffix(".bin"))
        os.replace(xml, staged)
    finally:
        for leftover in (xml, xml.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
