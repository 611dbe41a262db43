"""Turning what a user passes to :meth:`Segmentor.predict` into the tensors the network was evaluated on.

Three steps, each matching the reference (sssegmentation) test pipeline ``Resize -> Normalize -> ToTensor``:

1. :func:`as_image_batch` parses the input (file path, PIL image, numpy array, torch tensor, or a list of these)
   into RGB ``uint8`` tensors ``(3, H, W)``, rejecting anything ambiguous with an error saying what was received
   and what is accepted.
2. :func:`resize_like_cv2` resizes with the size rule of the reference's ``Resize(keep_ratio=True)``
   (:func:`keep_ratio_size`) and reproduces OpenCV's ``INTER_LINEAR`` on ``uint8`` images in integer
   arithmetic (11-bit fixed-point weights, OpenCV's rounding), without depending on OpenCV at runtime.
3. :func:`normalize` subtracts the mean and divides by the standard deviation (RGB order) in float32.

:func:`preprocess` is steps 2 and 3 for a model's :class:`~resnest_zoo.config.Preprocessing`: the one description of
the test-time pipeline that ``predict``, the input pipeline of evaluation and batch prediction, and the runtime
files' metadata all read.

Accepted images (all become 8-bit RGB, because the checkpoints were trained and evaluated on 8-bit RGB):

* ``str`` / ``os.PathLike``: an image file, decoded by Pillow; the EXIF orientation is applied (as OpenCV's
  ``imread`` does). 16-bit greyscale files keep their high byte (as ``imread`` does for 16-bit PNGs).
* ``PIL.Image.Image`` of any mode: converted to RGB. The alpha channel of ``RGBA``/``LA``/``PA`` images (and
  the transparency of ``P`` images) is **discarded, not composited** -- what ``cv2.imread`` gives for such files.
  ``I;16`` images keep their high byte; ``I`` and ``F`` images are converted by Pillow (values clipped to 0-255).
* ``numpy.ndarray``: ``H x W`` (greyscale), ``H x W x 1``, ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA, alpha
  discarded); ``uint8`` (0-255) or floating point in ``[0, 1]`` (multiplied by 255 and rounded to 8 bits).
* ``torch.Tensor``: ``H x W``, ``C x H x W`` or ``H x W x C`` with C in 1, 3, 4 (a 3-D tensor is read as CHW when
  its first dimension is 1, 3 or 4, otherwise as HWC), ``uint8`` 0-255 or floating point in ``[0, 1]`` as for
  numpy; a 4-D tensor is a batch ``N x C x H x W``. Tensors stay on their device.
* ``list`` / ``tuple`` of the above single images: a batch. An error about one of its images, when it is read
  or later, names it: ``item 2 of the batch ('photos/a.png'): ...``.

A picture so thin that the keep-ratio resize would round one side to 0 pixels (``1 x 5000``) keeps 1 pixel there.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import Preprocessing
from ..errors import ImageReadError

__all__ = [
    "ImageInput",
    "ParsedImage",
    "ACCEPTED_INPUTS",
    "as_image_batch",
    "parse_image",
    "read_image",
    "decode_image",
    "preprocess",
    "errors_naming",
    "keep_ratio_size",
    "resize_like_cv2",
    "normalize",
]

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

ACCEPTED_INPUTS = (
    "an image file path, a PIL.Image, a numpy array HxW / HxWx1 / HxWx3 (RGB) / HxWx4 (RGBA) of uint8 (0-255) "
    "or float in [0, 1], a torch tensor HxW / CxHxW / HxWxC (C = 1, 3 or 4) of uint8 or float in [0, 1], "
    "a 4-D tensor NxCxHxW (a batch), or a list/tuple of single images"
)

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers out of 2048
_COEF_SCALE = 1 << _COEF_BITS


@dataclass
class ParsedImage:
    """One input image as an RGB ``uint8`` tensor ``(3, H, W)`` on the device it came on, and which batch item
    it is (``index``, and ``path`` when read from a file) so that later errors can name it."""

    pixels: torch.Tensor
    index: int | None = None
    path: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


def _item_name(index: int, path: str | None) -> str:
    return f"item {index} of the batch" + (f" ({path!r})" if path is not None else "")


def _renamed(error: Exception, prefix: str) -> Exception:
    """``error`` with ``prefix: `` before its message and of the same type; where that type cannot carry the new
    message, its nearest built-in base (so ``except ValueError``/``except OSError`` still catch it)."""
    message = f"{prefix}: {error}"

    def same_kind() -> Exception:  # for a constructor that wants more than a message: same class and attributes
        same = type(error).__new__(type(error))
        same.__dict__.update(vars(error))
        same.args = (message,)
        return same

    builtin_bases = [kind for kind in type(error).__mro__ if kind.__module__ == "builtins"]
    for make in [lambda: type(error)(message), same_kind, *[lambda kind=kind: kind(message) for kind in builtin_bases]]:
        try:
            renamed = make()
        except Exception:  # this one cannot be built from one message: try the next
            continue
        if str(renamed) == message:  # not an OSError whose text comes from its errno, nor a custom __str__
            return renamed
    return error  # not reached: Exception itself takes a message


@contextmanager
def _naming(prefix: str | None) -> Iterator[None]:
    """Errors of the kinds ``predict`` raises (ValueError, TypeError, OSError, RuntimeError) raised inside get
    ``prefix`` in front of their message; nothing changes when ``prefix`` is None."""
    try:
        yield
    except (TypeError, ValueError, OSError, RuntimeError) as error:
        if prefix is None:
            raise
        raise _renamed(error, prefix).with_traceback(error.__traceback__) from None


def errors_naming(images: Sequence[ParsedImage]) -> AbstractContextManager[None]:
    """A context in which an error names the batch items it concerns (``item 2 of the batch ('a.png')``, or
    ``items 0, 1 of the batch`` for a forward pass they share); a no-op for a single image, not from a batch."""
    items = [image for image in images if image.index is not None]
    if not items:
        return _naming(None)
    if len(items) == 1:
        return _naming(_item_name(items[0].index, items[0].path))
    return _naming(f"items {', '.join(str(image.index) for image in items)} of the batch")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, torch.Tensor):
        return f"torch tensor of shape {tuple(value.shape)} and dtype {value.dtype} on {value.device}"
    if isinstance(value, Image.Image):
        return f"PIL image of mode {value.mode!r} and size {value.size}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def as_image_batch(images: Any) -> tuple[list[ParsedImage], bool]:
    """Parse ``images`` into a list of RGB ``uint8`` images, and whether the input was a batch.

    A batch is a ``list``/``tuple`` or a 4-D tensor; everything else is a single image.
    """
    if isinstance(images, (list, tuple)):
        parsed = []
        for index, item in enumerate(images):
            path = str(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else None
            with _naming(_item_name(index, path)):
                if isinstance(item, (list, tuple)) or (isinstance(item, torch.Tensor) and item.ndim == 4):
                    raise ValueError(f"it is itself a batch ({_describe(item)}); nested batches are not "
                                     f"accepted, pass one flat list of images")
                parsed.append(ParsedImage(parse_image(item).pixels, index, path))
        return parsed, True
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.shape[1] not in (1, 3, 4):
            raise ValueError(f"a 4-D tensor is read as a batch N x C x H x W with C = 1, 3 or 4, got shape "
                             f"{tuple(images.shape)}; for channels-last batches use images.permute(0, 3, 1, 2)")
        parsed = []
        for index, image in enumerate(images):
            with _naming(_item_name(index, None)):
                parsed.append(ParsedImage(parse_image(image).pixels, index))
        return parsed, True
    return [parse_image(images)], False


def parse_image(image: Any) -> ParsedImage:
    """One image (path, PIL image, numpy array or tensor) as RGB ``uint8`` ``(3, H, W)``; see the module docs."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"image file {str(path)!r} does not exist")
        return _from_numpy(read_image(path, Image.MAX_IMAGE_PIXELS), "image file")
    if isinstance(image, Image.Image):
        return _from_numpy(_pil_to_numpy(image), "PIL image")
    if isinstance(image, np.ndarray):
        return _from_numpy(image, "numpy array")
    if isinstance(image, torch.Tensor):
        return _from_tensor(image)
    raise TypeError(f"cannot read an image from a {_describe(image)}; expected {ACCEPTED_INPUTS}")


def read_image(path: str | os.PathLike[str], max_pixels: int | None) -> np.ndarray:
    """An image file as RGB ``uint8`` ``(H, W, 3)``, EXIF orientation applied, or
    :class:`~resnest_zoo.ImageReadError` with the reason: missing (a dangling link says where it points), a folder,
    empty, unreadable, not an image, truncated, or more than ``max_pixels`` pixels (a decompression bomb; ``None``:
    no limit). The one way files are read, by ``predict`` and by the worker processes of the input pipeline."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
    except FileNotFoundError:
        if os.path.islink(name):
            raise ImageReadError(name, f"file does not exist (a symbolic link to {os.readlink(name)!r}, which is "
                                       f"not there)") from None
        raise ImageReadError(name, "file does not exist") from None
    except OSError as exc:
        raise ImageReadError(name, f"cannot be read ({exc.strerror or exc})") from None
    if os.path.isdir(name):
        raise ImageReadError(name, "is a folder, not an image file")
    if size == 0:
        raise ImageReadError(name, "empty file (0 bytes)")
    return _decode(name, name, max_pixels)


def decode_image(data: bytes, max_pixels: int | None, name: str = "upload") -> np.ndarray:
    """Encoded image bytes (an upload) as :func:`read_image` reads a file: RGB ``uint8`` ``(H, W, 3)``, EXIF
    orientation applied, or :class:`~resnest_zoo.ImageReadError` naming ``name`` with the reason (empty, not an
    image, truncated, a decompression bomb of more than ``max_pixels`` pixels)."""
    if not data:
        raise ImageReadError(name, "empty (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | io.BytesIO, name: str, max_pixels: int | None) -> np.ndarray:
    """The Pillow decoding :func:`read_image` and :func:`decode_image` share (``source``: a path or the bytes)."""
    width = height = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                width, height = opened.size
                if max_pixels is not None and width * height > max_pixels:
                    raise Image.DecompressionBombError(f"{width * height} pixels")
                opened.load()
                pixels = _pil_to_numpy(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
        found = f"{width}x{height} = {width * height:,} pixels" if width is not None else str(exc)
        raise ImageReadError(name, f"decompression bomb: {found}, more than Pillow's MAX_IMAGE_PIXELS ({limit:,}); "
                                   f"raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted") from None
    except PermissionError as exc:
        raise ImageReadError(name, f"cannot be read ({exc.strerror})") from None
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(name, f"truncated or corrupt image ({exc})") from None
    return pixels


def _pil_to_numpy(image: Image.Image) -> np.ndarray:
    """RGB uint8 ``H x W x 3``; alpha and transparency are discarded, 16-bit grey keeps its high byte (see the
    module docs)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "RGBA":
        image = image.convert("RGB")  # Pillow drops the alpha channel, it does not composite
    elif image.mode in ("LA", "La"):
        image = image.getchannel(0).convert("RGB")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA").convert("RGB")  # palette colours; transparency dropped
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image)  # a writable copy: torch refuses to share read-only memory


def _check_finite_unit_range(values: np.ndarray | torch.Tensor, what: str) -> None:
    if isinstance(values, torch.Tensor):
        # one host sync on float tensors: a bad value must be reported before inference, not silently clipped
        low, high = values.aminmax() if values.numel() else (values.new_zeros(()), values.new_zeros(()))
        finite = bool(torch.isfinite(values).all())
        low, high = float(low), float(high)
    else:
        finite = bool(np.isfinite(values).all())
        low, high = float(values.min()), float(values.max())
    if not finite:
        raise ValueError(f"{what} contains NaN or infinite values")
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} has values in [{low:g}, {high:g}]; float images must lie in [0, 1] "
                         f"(divide 0-255 data by 255, or pass it as uint8)")


def _from_numpy(array: np.ndarray, what: str) -> ParsedImage:
    description = f"{what} ({_describe(array)})"
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim != 3:
        hint = "; for a batch pass a list of images" if array.ndim == 4 else ""
        raise ValueError(f"{description}: expected H x W or H x W x C (C = 1, 3 or 4), got {array.ndim} dimensions{hint}")
    if array.shape[2] not in (1, 3, 4):
        hint = " (channels-first? use array.transpose(1, 2, 0))" if array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"{description}: expected 1, 3 (RGB) or 4 (RGBA) channels in the last dimension, "
                         f"got {array.shape[2]}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{description}: the image is empty")
    array = array[:, :, :3] if array.shape[2] == 4 else array
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        _check_finite_unit_range(array, description)
        pixels = np.rint(array.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    else:
        raise TypeError(f"{description}: unsupported dtype {array.dtype}; expected uint8 (0-255) or float in [0, 1] "
                        f"(for integer data already in 0-255 use array.astype(np.uint8))")
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only memory
        pixels = pixels.copy()
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return ParsedImage(tensor.contiguous())


def _from_tensor(tensor: torch.Tensor) -> ParsedImage:
    description = f"tensor ({_describe(tensor)})"
    tensor = tensor.detach()
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        if tensor.shape[0] not in (1, 3, 4):
            if tensor.shape[2] not in (1, 3, 4):
                raise ValueError(f"{description}: expected C x H x W or H x W x C with C = 1, 3 or 4 channels")
            tensor = tensor.permute(2, 0, 1)
    else:
        raise ValueError(f"{description}: expected H x W, C x H x W, H x W x C or a batch N x C x H x W, "
                         f"got {tensor.ndim} dimensions")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{description}: the image is empty")
    tensor = tensor[:3] if tensor.shape[0] == 4 else tensor
    if tensor.dtype == torch.uint8:
        pixels = tensor
    elif tensor.is_floating_point():
        _check_finite_unit_range(tensor, description)
        pixels = torch.round(tensor.float() * 255.0).to(torch.uint8)
    else:
        raise TypeError(f"{description}: unsupported dtype {tensor.dtype}; expected uint8 (0-255) or float in [0, 1] "
                        f"(for integer data already in 0-255 use tensor.to(torch.uint8))")
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return ParsedImage(pixels.contiguous())


def keep_ratio_size(height: int, width: int, target: Sequence[int]) -> tuple[int, int]:
    """``(new_height, new_width)`` of the reference's ``Resize(output_size=target, keep_ratio=True)``.

    The scale is the largest that fits the long side into ``max(target)`` and the short side into
    ``min(target)``; each side is scaled and rounded half up, with the reference's exact float arithmetic. A side
    that would round to 0 (a ``1 x 5000`` picture; the reference fails there) is kept at 1 pixel.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    scale = min(max(target) / max(height, width), min(target) / min(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _linear_taps(source: int, destination: int, *, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """OpenCV's INTER_LINEAR source indices and 11-bit fixed-point weights along one axis.

    Mirrors ``cv::resize``: ``f = float((d + 0.5) * (1 / (destination / source)) - 0.5)`` (double, then float32),
    taps ``floor(f)`` and ``floor(f) + 1`` clipped to the image, weights ``round((1 - frac) * 2048)`` and
    ``round(frac * 2048)`` (ties to even, as ``cvRound``). Along x OpenCV also zeroes the fraction where a tap
    falls outside the image (``clamp_weights=True``); along y it keeps the fraction and only clips the rows.
    """
    scale = 1.0 / (destination / source)
    position = ((np.arange(destination, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position)
    fraction = (position - first).astype(np.float32)
    first = first.astype(np.int64)
    if clamp_weights:
        outside = (first < 0) | (first >= source - 1)
        fraction[outside] = 0.0
    first_index = np.clip(first, 0, source - 1)
    second_index = np.clip(first + 1, 0, source - 1)
    weight_first = np.rint((np.float32(1.0) - fraction) * np.float32(_COEF_SCALE)).astype(np.int32)
    weight_second = np.rint(fraction * np.float32(_COEF_SCALE)).astype(np.int32)
    return first_index, second_index, weight_first, weight_second


def resize_like_cv2(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``uint8`` ``(C, H, W)`` to ``size = (height, width)`` as ``cv2.resize(..., INTER_LINEAR)`` does.

    OpenCV resizes ``uint8`` images in fixed point: a horizontal pass ``p0 * a0 + p1 * a1`` with weights out of
    2048, then a vertical pass ``((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2``. Doing the same
    integer operations here gives the reference's pixels (bit-exact in the tests) on any torch device, with no
    antialiasing when shrinking, exactly like OpenCV.
    """
    if image.dtype != torch.uint8 or image.ndim != 3:
        raise ValueError(f"resize_like_cv2 expects a uint8 (C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    height, width = int(image.shape[1]), int(image.shape[2])
    new_height, new_width = int(size[0]), int(size[1])
    if new_height <= 0 or new_width <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    if (new_height, new_width) == (height, width):
        return image
    device = image.device
    x0, x1, a0, a1 = (torch.from_numpy(v).to(device) for v in _linear_taps(width, new_width, clamp_weights=True))
    y0, y1, b0, b1 = (torch.from_numpy(v).to(device) for v in _linear_taps(height, new_height, clamp_weights=False))
    pixels = image.to(torch.int32)
    rows = pixels.index_select(2, x0) * a0 + pixels.index_select(2, x1) * a1  # (C, H, new_W), values < 2^20
    rows = rows >> 4
    top = (rows.index_select(1, y0) * b0[:, None]) >> 16
    bottom = (rows.index_select(1, y1) * b1[:, None]) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(image - mean) * (1 / std)`` in float32 per RGB channel, as the reference's ``Normalize`` computes it."""
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
    scale_t = torch.tensor([1.0 / float(s) for s in std], dtype=torch.float64).to(torch.float32)
    shape = (-1, 1, 1) if image.ndim == 3 else (1, -1, 1, 1)
    mean_t = mean_t.to(image.device).view(shape)
    scale_t = scale_t.to(image.device).view(shape)
    return (image.to(torch.float32) - mean_t) * scale_t


def preprocess(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """A checkpoint's test-time pipeline on one picture: RGB ``uint8`` ``(3, H, W)`` -> normalised float32
    ``(3, h, w)`` at the keep-ratio resized size (:func:`keep_ratio_size`, :func:`resize_like_cv2`,
    :func:`normalize`), on the picture's device."""
    size = keep_ratio_size(int(pixels.shape[1]), int(pixels.shape[2]), preprocessing.resize)
    return normalize(resize_like_cv2(pixels, size), preprocessing.mean, preprocessing.std)
