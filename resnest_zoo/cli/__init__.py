"""The ``resnest-zoo`` command line (also ``python -m resnest_zoo``): :func:`main` is the console script."""
from __future__ import annotations

from .app import build_parser, main

__all__ = ["main", "build_parser"]
