"""A prediction as the answer a client asked for (``format=``): the indexed PNG mask, the overlay, or JSON.

* ``png``: the labels as an indexed PNG at the image's size, the dataset palette -- the bytes
  :meth:`Prediction.save <resnest_zoo.Prediction.save>` writes;
* ``overlay``: the mask blended on the image (``alpha``: the mask's opacity), as a PNG;
* ``json``: ``model``, ``width``, ``height``, the classes present (``id``, ``name``, pixel ``share``, ``color``;
  largest first) and ``mask_png``, the ``png`` answer base64-encoded.
"""
from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from .problems import Problem

__all__ = ["FORMATS", "encode"]

FORMATS = ("png", "overlay", "json")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # as Prediction.save writes its file
    return buffer.getvalue()


def _mask_png(prediction: Any) -> bytes:
    try:
        return _png(prediction.to_pil())
    except ValueError as exc:  # more than 256 classes: no indexed PNG can hold them
        raise Problem("unsupported_format", f"{exc}; ask for format=overlay") from None


def encode(prediction: Any, fmt: str, *, model: str, alpha: float) -> tuple[bytes | dict[str, Any], str]:
    """``(body, media type)`` of the answer; for ``json`` the body is the document (a dict)."""
    if fmt == "png":
        return _mask_png(prediction), "image/png"
    if fmt == "overlay":
        return _png(prediction.overlay(alpha)), "image/png"
    height, width = prediction.size
    ids = {name: index for index, name in enumerate(prediction.class_names)}
    classes = [{"id": ids[name], "name": name, "share": share,
                "color": [int(c) for c in prediction.palette[ids[name]]]} for name, share in prediction.summary()]
    document = {"model": model, "width": width, "height": height, "classes": classes,
                "mask_png": base64.b64encode(_mask_png(prediction)).decode("ascii")}
    return document, "application/json"
