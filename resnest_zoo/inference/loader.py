"""The input pipeline of evaluation and batch prediction: image files in, batches of resized, normalised images
on the device out, with the network never waiting for a file.

* :class:`ImageFiles` (a ``torch.utils.data.Dataset``) reads one file in a ``DataLoader`` worker process:
  decodes it (Pillow, EXIF orientation applied), resizes it keep-ratio with OpenCV's arithmetic and normalises it
  (:mod:`.preprocess`, the checkpoints' test pipeline), and reads its annotation when evaluating. A file that
  cannot be read comes back as a :class:`LoadedImage` whose ``error`` says why, never as a worker's traceback.
* :func:`load_images` runs those workers over a list of files, in order, a few files ahead of the network
  (``prefetch`` per worker), in pinned memory when the device is a GPU.
* :class:`ShapeBatcher` groups images of the same resized shape into batches (a folder of mixed photographs
  still runs full batches), holding at most ``2 x batch_size`` images back, so memory stays bounded.
* :func:`to_device` stacks a batch on the device with non-blocking copies.

Memory does not grow with the number of files: only the list of paths is held, plus the images in flight. For
that to hold with glibc's allocator, left adaptive, which moves its mmap threshold above the size of the image
buffers once some are freed and then serves them from a heap that fragments and grows with the run (measured:
+230 MiB in the main process and +360 MiB in a worker between 40 and 300 images):

* a worker, which only reads files, fixes the threshold at 1 MiB (:func:`release_large_buffers`), so every
  image-sized buffer is mapped on its own and given back when freed;
* the main process, which runs the network, must not: mapping and zero-filling each activation afresh made a
  DeepLabV3+ forward 1.4x slower, and ``evaluate`` 1.3x slower, on 2 CPU cores. It keeps glibc's adaptive
  policy and gives the free pages of its heap back after each image instead (:func:`trim_heap`,
  ``malloc_trim``). Measured with ``benchmarks/bench_evaluate.py``: a rank's peak levels off (about 1.5 GiB at
  50 images, 1.7 GiB at 500 and at 1,000).
"""
from __future__ import annotations

import ctypes
import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..datasets.annotations import LabelMapping, read_label_map
from ..errors import DatasetError, ImageReadError
from .preprocess import keep_ratio_size, normalize, parse_image, resize_like_cv2

__all__ = [
    "Preprocess",
    "LoadedImage",
    "ImageFiles",
    "read_image",
    "decode_image",
    "load_images",
    "release_large_buffers",
    "trim_heap",
    "default_workers",
    "ShapeBatcher",
    "to_device",
]


@dataclass(frozen=True)
class Preprocess:
    """A checkpoint's test-time pipeline, as a small picklable recipe for worker processes: keep-ratio resize to
    ``resize`` (long side, short side) with OpenCV's bilinear arithmetic, then ``(pixel - mean) / std``."""

    resize: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, config) -> Preprocess:
        """The recipe of a :class:`~resnest_zoo.config.ModelConfig`."""
        pre = config.preprocessing
        return cls(tuple(pre.resize), tuple(pre.mean), tuple(pre.std))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """RGB ``uint8`` ``(3, H, W)`` -> normalised float32 ``(3, h, w)`` at the resized size."""
        resized = resize_like_cv2(pixels, keep_ratio_size(int(pixels.shape[1]), int(pixels.shape[2]), self.resize))
        return normalize(resized, self.mean, self.std)


@dataclass
class LoadedImage:
    """One file of the work list after a worker read it.

    ``index`` is its position in the list; ``size`` its original ``(height, width)``; ``tensor`` the normalised
    image at the resized size; ``image`` the decoded RGB pixels ``(H, W, 3)`` when kept (for overlays and
    :class:`~resnest_zoo.Prediction`); ``label`` the ground-truth class ids ``(H, W)`` when evaluating. When the
    file could not be used, ``error`` says why and ``error_path`` which file (the image or its annotation), and
    the tensors are ``None``.
    """

    index: int
    path: str
    size: tuple[int, int] = (0, 0)
    tensor: torch.Tensor | None = None
    image: torch.Tensor | None = None
    label: torch.Tensor | None = None
    error: str | None = None
    error_path: str | None = None

    def pin_memory(self) -> LoadedImage:
        """The same item with its tensors in page-locked memory (``DataLoader(pin_memory=True)`` calls this)."""
        pinned = {name: getattr(self, name).pin_memory() for name in ("tensor", "image", "label")
                  if getattr(self, name) is not None}
        return replace(self, **pinned)


def read_image(path: str | os.PathLike[str], max_pixels: int | None) -> np.ndarray:
    """An image file as RGB ``uint8`` ``(H, W, 3)``, EXIF orientation applied (as :func:`.preprocess.parse_image`
    reads files), or :class:`ImageReadError` with the reason: missing, a folder, empty, unreadable, not an image,
    truncated, or more than ``max_pixels`` pixels (a decompression bomb; ``None``: no limit)."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
    except FileNotFoundError:
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
    orientation applied, or :class:`ImageReadError` naming ``name`` with the reason (empty, not an image,
    truncated, a decompression bomb of more than ``max_pixels`` pixels)."""
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
                pixels = parse_image(ImageOps.exif_transpose(opened)).pixels
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
    return pixels.permute(1, 2, 0).numpy()


class ImageFiles(torch.utils.data.Dataset):
    """The files of a work list as :class:`LoadedImage` s (see the module docs); picklable for worker processes.

    Args:
        paths: image files, in the order of the work.
        preprocess: the model's test pipeline (:meth:`Preprocess.of` ``model.config``).
        annotations: for evaluation, each image's annotation file and the :class:`LabelMapping` of its values.
        keep_image: also return the decoded pixels (for overlays and :class:`~resnest_zoo.Prediction`).
        max_pixels: refuse images with more pixels (default: Pillow's ``MAX_IMAGE_PIXELS`` when made).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], preprocess: Preprocess, *,
                 annotations: Sequence[tuple[Path, LabelMapping]] | None = None, keep_image: bool = False,
                 max_pixels: int | None = -1) -> None:
        if annotations is not None and len(annotations) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(annotations)} annotations")
        self.paths = [os.fspath(path) for path in paths]
        self.preprocess = preprocess
        self.annotations = annotations
        self.keep_image = keep_image
        self.max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels == -1 else max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedImage:
        path = self.paths[index]
        item = LoadedImage(index, path)
        try:
            pixels = read_image(path, self.max_pixels)
        except ImageReadError as exc:
            item.error, item.error_path = exc.reason, path
            return item
        item.size = (int(pixels.shape[0]), int(pixels.shape[1]))
        if self.annotations is not None:
            annotation, mapping = self.annotations[index]
            try:
                label = read_label_map(annotation, mapping)
            except DatasetError as exc:
                item.error, item.error_path = str(exc), str(annotation)
                return item
            if label.shape != item.size:
                item.error = (f"annotation {annotation} is {label.shape[1]}x{label.shape[0]} pixels but its image "
                              f"{path} is {item.size[1]}x{item.size[0]}; they must be the same size")
                item.error_path = str(annotation)
                return item
            item.label = torch.from_numpy(label)
        chw = torch.from_numpy(pixels).permute(2, 0, 1)
        item.tensor = self.preprocess(chw)
        if self.keep_image:
            item.image = torch.from_numpy(pixels)
        return item


def _one(item: LoadedImage) -> LoadedImage:
    return item


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_released: set[int] = set()  # the processes (pids) already set


def release_large_buffers() -> None:
    """In this process, have glibc map every allocation of 1 MiB or more on its own and give it back to the system
    when freed (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``), so that image-sized buffers never fragment the heap; done
    once per process, in the loader's workers only (a network run so is much slower, see the module docstring).
    Elsewhere than glibc (musl, macOS, Windows) the allocator keeps its own policy."""
    if os.getpid() in _released:
        return
    _released.add(os.getpid())
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def trim_heap() -> None:
    """Give the free pages of this process's heap back to the system (glibc's ``malloc_trim(0)``; elsewhere
    nothing), so that freed image buffers do not accumulate in a fragmented heap."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _start_worker(_: int) -> None:
    release_large_buffers()


def _trimming(items: Iterator[LoadedImage]) -> Iterator[LoadedImage]:
    """``items``, the heap trimmed each time the consumer asks for the next one (so what it freed with the last
    one is given back; a trim is cheap next to a forward pass)."""
    for item in items:
        yield item
        trim_heap()


def default_workers(local_processes: int = 1) -> int:
    """Worker processes per process of the run: half of this node's CPUs shared among its processes (the other
    half computes), at least 1 and at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // max(1, local_processes) // 2))


def load_images(files: ImageFiles, order: Iterable[int] | None = None, *, workers: int = 0, pin_memory: bool = False,
                prefetch: int = 2) -> Iterator[LoadedImage]:
    """The :class:`LoadedImage` s of ``files`` at the positions ``order`` (default: all), in that order, read by
    ``workers`` processes (0: in this process), ``prefetch`` files ahead per worker."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a whole number >= 0 (0 reads in this process), got {workers!r}")
    indices = list(range(len(files))) if order is None else list(order)
    if not indices:
        return iter(())
    loader = torch.utils.data.DataLoader(
        files, batch_size=None, sampler=indices, num_workers=min(workers, len(indices)), collate_fn=_one,
        pin_memory=pin_memory, prefetch_factor=prefetch if workers else None, worker_init_fn=_start_worker,
    )
    return _trimming(iter(loader))


class ShapeBatcher:
    """Groups images of equal resized shape into batches of ``batch_size``.

    A batch leaves as soon as it is full. When more than ``max_waiting`` images (default ``2 x batch_size``) wait
    in unfinished groups, the group holding the oldest image leaves as a smaller batch, so no image waits long
    and memory stays bounded; :meth:`flush` empties every group at the end, oldest first.
    """

    def __init__(self, batch_size: int, max_waiting: int | None = None) -> None:
        self.batch_size = batch_size
        self.max_waiting = max(batch_size, 2 * batch_size if max_waiting is None else max_waiting)
        self._groups: OrderedDict[tuple[int, ...], list[LoadedImage]] = OrderedDict()
        self._waiting = 0

    def add(self, item: LoadedImage) -> list[list[LoadedImage]]:
        """Add a loaded image (with a tensor); the batches now ready."""
        shape = tuple(item.tensor.shape)
        group = self._groups.setdefault(shape, [])
        group.append(item)
        self._waiting += 1
        ready = []
        if len(group) == self.batch_size:
            ready.append(self._pop(shape))
        while self._waiting > self.max_waiting:
            ready.append(self._pop(self._oldest()))
        return ready

    def flush(self) -> list[list[LoadedImage]]:
        """Every waiting image, as batches, the group with the oldest image first."""
        ready = []
        while self._groups:
            ready.append(self._pop(self._oldest()))
        return ready

    def _oldest(self) -> tuple[int, ...]:
        return min(self._groups, key=lambda shape: self._groups[shape][0].index)

    def _pop(self, shape: tuple[int, ...]) -> list[LoadedImage]:
        group = self._groups.pop(shape)
        self._waiting -= len(group)
        return group


def to_device(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The tensors stacked into one batch on ``device``; copies from pinned memory do not block the host."""
    return torch.stack([tensor.to(device, non_blocking=True) for tensor in tensors])
