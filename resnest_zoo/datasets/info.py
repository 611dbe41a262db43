"""The record every dataset module provides (:class:`DatasetInfo`)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a prediction needs to know about the dataset a checkpoint was trained on."""

    key: str
    title: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
