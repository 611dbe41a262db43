"""Exceptions raised by resnest_zoo: one class per kind of failure, all under :class:`ResNeStZooError`."""
from __future__ import annotations

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
    """No source could supply the checkpoint (network errors, offline mode, digest mismatch ...)."""


class IntegrityError(ResNeStZooError, OSError):
    """A file whose sha256 digest or size differs from the expected one."""


class ConfigurationError(ResNeStZooError, ValueError):
    """A setting that cannot be used as given, such as an environment variable whose value does not parse."""
