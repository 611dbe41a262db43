"""Reading an uploaded image: the raw request body (``image/jpeg``, ``image/png``, ... or any other type) or the
field ``image`` of a ``multipart/form-data`` body, never more than the upload limit, never to disk.

A body announced larger than the limit (``Content-Length``) is refused before one byte of it is read; a chunked
body is counted as it arrives and refused as soon as it passes the limit. The bytes are decoded by the package's
own image reader (:func:`resnest_zoo.inference.preprocess.decode_image`: EXIF orientation applied, and empty,
truncated, not-an-image and decompression-bomb files refused with the reason).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from python_multipart.multipart import FormParser, parse_options_header
from python_multipart.exceptions import FormParserError
from starlette.requests import Request

from ..errors import ImageReadError
from ..inference.preprocess import decode_image
from .problems import Problem

__all__ = ["read_upload", "decode_upload", "FIELD"]

FIELD = "image"
"""The multipart form field that carries the image."""

_HOW = (f"send the image as the request body (curl --data-binary @photo.jpg) or as the multipart field {FIELD!r} "
        f"(curl -F {FIELD}=@photo.jpg)")


def _too_large(limit: int, received: str) -> Problem:
    return Problem("payload_too_large", f"the request body is {received}, more than this server's upload limit "
                                        f"of {limit:,} bytes ({limit / 2**20:g} MiB, --max-upload-mb); send a "
                                        "smaller image")


def check_length(request: Request, limit: int) -> None:
    """Refuse a body whose ``Content-Length`` is unreadable or over ``limit``, before reading any of it."""
    announced = request.headers.get("content-length")
    if announced is None:
        return
    try:
        length = int(announced)
    except ValueError:
        length = -1
    if length < 0:
        raise Problem("bad_request", f"Content-Length {announced!r} is not a byte count")
    if length > limit:
        raise _too_large(limit, f"{length:,} bytes")


async def read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of ``request`` (see the module docs); :class:`Problem` for an empty, oversized or malformed
    body, or a form without the field ``image``."""
    check_length(request, limit)
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    multipart = media_type == b"multipart/form-data"
    parts: dict[str, bytes] = {}
    names: list[str] = []
    parser = None
    if multipart:
        boundary = options.get(b"boundary")
        if not boundary:
            raise Problem("bad_request", "a multipart/form-data body without a boundary in its Content-Type")

        def keep(name: bytes | None, value: bytes) -> None:
            text = (name or b"").decode("latin-1")
            names.append(text)
            if text == FIELD and FIELD not in parts:
                parts[FIELD] = value

        parser = FormParser("multipart/form-data", on_field=lambda f: keep(f.field_name, f.value or b""),
                            on_file=lambda f: keep(f.field_name, _file_bytes(f)), boundary=boundary,
                            config={"MAX_MEMORY_FILE_SIZE": limit + 1, "MAX_BODY_SIZE": limit})
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, f"more than {limit:,} bytes (it was still arriving)")
            if parser is not None:
                parser.write(chunk)
            else:
                chunks.append(chunk)
        if parser is not None:
            parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise Problem("bad_request", f"the multipart/form-data body cannot be read ({exc})") from None
    if not multipart:
        data = b"".join(chunks)
        if not data:
            raise Problem("empty_body", f"the request body is empty: {_HOW}")
        return data
    if FIELD not in parts:
        found = ", ".join(repr(name) for name in names) or "none"
        raise Problem("missing_image", f"the multipart form has no field {FIELD!r} (fields received: {found}); {_HOW}")
    if not parts[FIELD]:
        raise Problem("empty_body", f"the multipart field {FIELD!r} is empty: {_HOW}")
    return parts[FIELD]


def _file_bytes(file) -> bytes:
    handle = file.file_object
    handle.seek(0)
    return handle.read()


def decode_upload(data: bytes) -> np.ndarray:
    """The uploaded image as RGB ``uint8`` ``(H, W, 3)``; :class:`Problem` ``invalid_image`` with the reason."""
    try:
        return decode_image(data, Image.MAX_IMAGE_PIXELS, name="upload")
    except ImageReadError as exc:
        raise Problem("invalid_image", f"the upload is not a usable image: {exc.reason}") from None
