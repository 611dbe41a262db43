"""Process memory readings shared by the benchmarks (Linux ``/proc/self/status``, with portable fallbacks)."""
from __future__ import annotations

import resource
from pathlib import Path


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (NaN where ``/proc`` is not available)."""
    value = _status_mb("VmRSS")
    return float("nan") if value is None else value


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: ``VmHWM`` (resettable through ``/proc/self/clear_refs``;
    ``ru_maxrss``, the fallback, also survives ``exec``)."""
    value = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if value is None else value


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM), so that the next :func:`peak_rss_mb` is what runs from now on
    reach; False where the kernel does not allow it (then the peak is the process's since it started)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
