"""How long work shows its progress: a live bar on a terminal or in a notebook, periodic lines in a log.

Every progress display of the package (downloads, batch prediction, evaluation) comes from :func:`progress_bar`,
so the rule is the same everywhere: a tqdm bar only where one can be drawn (standard error is a terminal, or the
code runs in a notebook), and elsewhere -- output redirected to a log file, a job scheduler -- one plain line every
:data:`LOG_INTERVAL` seconds and one at the end, instead of a bar redrawn with carriage returns.
"""
from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["interactive", "progress_bar", "LOG_INTERVAL", "LogLines"]

LOG_INTERVAL = 30.0
"""Seconds between two status lines when progress goes to a log rather than a terminal."""


def interactive() -> bool:
    """Whether a live bar can be drawn: standard error is a terminal, or this is a notebook kernel."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class LogLines:
    """A tqdm-like counter that writes one status line to standard error every ``interval`` seconds, and one when
    closed: what a log file should get instead of a bar."""

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it", unit_scale: bool = False,
                 initial: int = 0, interval: float = LOG_INTERVAL, **_: Any) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = initial
        self.interval = interval
        self.postfix = ""
        self.disable = False
        self._start = self._shown = time.monotonic()
        self._closed = False

    def _line(self) -> str:
        from tqdm import tqdm

        elapsed = time.monotonic() - self._start
        meter = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                  unit_scale=self.unit_scale, postfix=self.postfix or None,
                                  bar_format="{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}"
                                             "{postfix}]" if self.total else
                                             "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]")
        return meter

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._shown >= self.interval:
            self._shown = now
            print(self._line(), file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def refresh(self) -> None:
        """Nothing to redraw in a log (tqdm's interface)."""

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line(), file=sys.stderr, flush=True)

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None = None, *, desc: str, unit: str = "it", enabled: bool = True,
                 **options: Any) -> Any:
    """A progress display for ``total`` steps: a tqdm bar on a terminal or in a notebook, :class:`LogLines`
    elsewhere, and a disabled tqdm (which shows nothing) when not ``enabled``. ``options`` are tqdm's
    (``unit_scale``, ``initial`` ...)."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, desc=desc, unit=unit, disable=True, **options)
    if interactive():
        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **options)
    return LogLines(total, desc=desc, unit=unit, **options)
