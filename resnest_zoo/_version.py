"""The package version: read by ``resnest_zoo.__version__``, the packaging metadata (pyproject.toml) and every file
that records which resnest_zoo wrote it."""

__version__ = "0.1.0"
