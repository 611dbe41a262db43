"""What the docs' generators (make_tables.py, make_diagrams.py, make_charts.py) share: write the files they
generate, or, with ``--check``, only say which are missing or stale."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def update(outputs: dict[Path, str], *, check: bool, command: str) -> int:
    """Write each ``path: text`` of ``outputs`` that differs from the file (``check``: write nothing, exit code 1
    if any differs); the exit code for the script."""
    stale = [path for path, text in outputs.items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
    if check:
        if stale:
            print(f"missing or stale: {names}: run {command}", file=sys.stderr)
            return 1
        print("all current")
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(outputs[path], encoding="utf-8")
    print(f"wrote {names}" if stale else "all current")
    return 0
