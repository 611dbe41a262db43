"""Exceptions raised by resnest_zoo: one class per kind of failure, all under :class:`ResNeStZooError`."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ResNeStZooError",
    "UnknownModelError",
    "CatalogueError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "CheckpointNotAvailableError",
    "IntegrityError",
    "ConfigurationError",
    "DeviceNotAvailableError",
    "DatasetError",
    "ImageReadError",
    "OutputWriteError",
    "FolderReadError",
    "InvalidClassesError",
    "PretrainedNotFoundError",
    "ConfigFormatError",
    "ForeignConfigError",
    "ConfigVersionError",
    "OptionalDependencyError",
    "UnsupportedOpsetError",
    "RuntimeFileError",
    "RuntimeModelMismatchError",
    "OutputConflictError",
    "HubConnectionError",
    "ClassIdError",
    "CalibrationError",
    "AccuracyBoundError",
]


class ResNeStZooError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownModelError(ResNeStZooError, KeyError):
    """A segmentor or dataset name that is not in the catalogue."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CatalogueError(ResNeStZooError, ValueError):
    """``checkpoints.json`` does not follow its schema."""


class CheckpointFormatError(ResNeStZooError, ValueError):
    """A file that is not a readable checkpoint (not a torch zip/pickle, not safetensors, no state dict inside)."""


class CheckpointMismatchError(ResNeStZooError, RuntimeError):
    """A checkpoint whose tensors do not fit the model: missing, unexpected or mis-shaped keys."""


class UnsafeCheckpointError(ResNeStZooError, RuntimeError):
    """A ``.pth`` file whose unpickling would import or call code; it was refused and nothing ran."""


class CheckpointNotAvailableError(ResNeStZooError, OSError):
    """No source could supply the checkpoint (network errors, offline mode, digest mismatch, unwritable cache ...).

    ``attempts`` lists ``(source, reason)`` for each source tried, in order.
    """

    def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.attempts: list[tuple[str, str]] = list(attempts)


class IntegrityError(ResNeStZooError, OSError):
    """A file whose sha256 digest or size differs from the expected one."""


class ConfigurationError(ResNeStZooError, ValueError):
    """A setting that cannot be used as given, such as an environment variable whose value does not parse."""


class DeviceNotAvailableError(ResNeStZooError, ValueError):
    """A ``device`` that cannot be used here: no such accelerator (``cuda`` without a GPU), an index past the
    devices present (``cuda:3`` with two GPUs), or a name torch does not know."""


class DatasetError(ResNeStZooError, ValueError):
    """A dataset folder that cannot be evaluated as it is: a missing folder or split list, an image without its
    annotation (or the reverse), sizes that differ, label values the dataset cannot contain. Names the file."""


class ImageReadError(ResNeStZooError, ValueError):
    """An input file that is not a readable image: missing or unreadable, empty, truncated, not an image, or a
    decompression bomb (more pixels than Pillow's ``MAX_IMAGE_PIXELS``). ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # pickles with its two arguments (across processes)
        return type(self), (self.path, self.reason)


class OutputWriteError(ResNeStZooError, OSError):
    """An output file that cannot be written (folder not writable, disk full ...); outputs already written are kept."""


class FolderReadError(ResNeStZooError, OSError):
    """A folder of inputs (pictures, a dataset, training data) that cannot be listed: no permission, or gone while
    it was read. Its files are never skipped silently: the work stops before it starts."""


# --- models of one's own: new classes, saved folders (config.json) -------------------------------------------

class InvalidClassesError(ResNeStZooError, ValueError):
    """``num_classes``, ``class_names`` or ``palette`` that do not describe a set of classes a model can learn: a
    count that is not an integer of at least 2 (one class leaves nothing to tell apart: use background and object),
    names of another length or repeated, colours that are not ``(classes, 3)`` integers in 0-255."""


class ClassIdError(ResNeStZooError, ValueError):
    """A training target holding class ids the model does not predict: at least its number of classes, or negative,
    and not the ignored value. The message gives the values found and the range expected."""


class HubConnectionError(ResNeStZooError, ConnectionError):
    """The Hugging Face Hub could not be reached to share a model: no network, no answer, or offline mode
    (``RESNEST_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), under which nothing touches the network."""


class PretrainedNotFoundError(ResNeStZooError, FileNotFoundError):
    """No saved model where one was asked for: no such folder or Hub repository, or one without ``config.json``
    or ``model.safetensors``."""


class ConfigFormatError(ResNeStZooError, ValueError):
    """A saved model's ``config.json`` that cannot be used: not JSON, or fields missing, unknown or of the wrong type."""


class ForeignConfigError(ConfigFormatError):
    """A ``config.json`` written by another library (transformers, timm ...), not by resnest_zoo."""


class ConfigVersionError(ConfigFormatError):
    """A ``config.json`` in a newer format than this resnest_zoo reads: upgrade the package to load it."""


# --- runtime files and backends: ONNX, OpenVINO -----------------------------------------------------------------

class OptionalDependencyError(ResNeStZooError, ImportError):
    """A feature whose optional dependency is not installed (ONNX Runtime, OpenVINO, onnx); the message names the
    extra that provides it and the command that installs it (``pip install "resnest-zoo[...]"``, or
    ``pip install -e "CLONE[...]"`` for a clone of the repository)."""


class UnsupportedOpsetError(ResNeStZooError, ValueError):
    """An ONNX opset version the export cannot write; the message gives the supported range."""


class RuntimeFileError(ResNeStZooError, ValueError):
    """A file offered as a runtime model that resnest_zoo did not write: not ONNX or OpenVINO IR at all, a model
    without resnest_zoo's format marker, a newer format version, or a format the chosen backend cannot run."""


class RuntimeModelMismatchError(ResNeStZooError, ValueError):
    """A runtime file written by resnest_zoo for another model than the one asked for: the segmentor, dataset,
    classes, preprocessing or source checkpoint differ; the message lists each difference."""


class OutputConflictError(ResNeStZooError, ValueError):
    """Outputs that would write over an input, put two inputs' results in one file, or replace a file that batch
    prediction did not write (without ``overwrite``); refused before any work."""


# --- INT8 quantization ---------------------------------------------------------------------------------------

class CalibrationError(ResNeStZooError, ValueError):
    """A calibration source for INT8 quantization that cannot be used: no images in it, files that cannot be read
    (each named, with why), fewer images than the quantization needs (the message says how many were found), or a
    dataset split that is not there."""


class AccuracyBoundError(ResNeStZooError, RuntimeError):
    """INT8 quantization could not keep the mIoU within the bound asked for (``max_miou_drop``), even with the
    layers that cost accuracy left in floating point; nothing was written. ``measured_drop`` and ``max_drop`` are
    the mIoU drop reached and the bound, in points (0-100)."""

    def __init__(self, message: str, measured_drop: float, max_drop: float) -> None:
        super().__init__(message)
        self.measured_drop = measured_drop
        self.max_drop = max_drop

    def __reduce__(self):  # pickles with its three arguments
        return type(self), (str(self), self.measured_drop, self.max_drop)
