"""How this copy of resnest_zoo is installed, and so the pip command that adds an extra to it or upgrades it.

A copy installed from a package index (``pip install resnest-zoo``) is extended with
``pip install "resnest-zoo[onnx]"`` and upgraded with ``pip install --upgrade resnest-zoo``. A clone of the
repository installed in place (``pip install -e .``, as README "Install" says) is not on any index: it is extended
with ``pip install -e "/path/to/clone[onnx]"`` and upgraded by pulling the clone. Which case holds is seen from where
the package is imported: a clone's package folder sits beside its ``pyproject.toml``. Every error message that
names an install command asks this module. Torch-free and dependency-free (a leaf).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DISTRIBUTION", "clone_folder", "install_command", "upgrade_command"]

DISTRIBUTION = "resnest-zoo"
"""The name pip knows the package by (``pyproject.toml``'s ``[project] name``)."""

_PACKAGE = Path(__file__).resolve().parent


def clone_folder(package: Path = _PACKAGE) -> Path | None:
    """The clone of the repository that ``package`` (default: this one) is imported from, or None when it is an
    installed copy (in ``site-packages``)."""
    folder = package.parent
    return folder if (folder / "pyproject.toml").is_file() else None


def install_command(extra: str, *, package: Path = _PACKAGE) -> str:
    """The command that installs ``extra`` (a ``[project.optional-dependencies]`` name, such as ``onnx``) into this
    installation: ``pip install "resnest-zoo[onnx]"``, or ``pip install -e "CLONE[onnx]"`` for a clone."""
    clone = clone_folder(package)
    return f'pip install "{DISTRIBUTION}[{extra}]"' if clone is None else f'pip install -e "{clone}[{extra}]"'


def upgrade_command(*, package: Path = _PACKAGE) -> str:
    """The command that upgrades this installation: ``pip install --upgrade resnest-zoo``, or for a clone
    ``git -C CLONE pull`` then its install again (its dependencies may have changed)."""
    clone = clone_folder(package)
    return (f"pip install --upgrade {DISTRIBUTION}" if clone is None
            else f'git -C "{clone}" pull && pip install -e "{clone}"')
