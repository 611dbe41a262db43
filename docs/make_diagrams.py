"""The two diagrams of the docs, as SVG written by hand (no dependency beyond Python):

    python docs/make_diagrams.py          # writes docs/images/layers.svg and docs/images/batch_pipeline.svg
    python docs/make_diagrams.py --check  # exit 1 if either differs from what this script draws now

* ``layers.svg``, the package's layer order, is computed from the imports in ``resnest_zoo/`` (every ``import``
  and ``from ... import``, inside functions too; not those under ``if TYPE_CHECKING:``, which never run, nor the
  package's ``__init__``, which only names the public surface): each top-level module or sub-package is a node,
  its layer is one above the highest layer it imports from, so it cannot drift from the code. An import cycle
  between nodes is an error (the layers would not be an order).
* ``batch_pipeline.svg``: readers -> network -> writers, as ``resnest_zoo.inference`` runs batch prediction.
"""
from __future__ import annotations

import argparse
import ast
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnest_zoo"
IMAGES = ROOT / "docs" / "images"
if str(ROOT / "docs") not in sys.path:  # generated.py, beside this script
    sys.path.insert(0, str(ROOT / "docs"))

from generated import update  # noqa: E402

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


# --- the layer order, from the imports ---------------------------------------------------------------------

def node_of(module: str) -> str | None:
    """The node a dotted module name of the package belongs to: ``weights`` for ``resnest_zoo.weights.cache``."""
    parts = module.split(".")
    if parts[0] != PACKAGE.name or len(parts) < 2:
        return None
    if not ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
        return None  # a name the package itself defines (``from .. import __version__``): its __init__
    return parts[1]


def _skipped(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def imports() -> dict[str, set[str]]:
    """Node -> the other nodes it imports from (every file of the node, every import that runs)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        parts = list(relative.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        if parts == [PACKAGE.name]:
            continue  # the package's __init__: the public names, imported on first use
        module = ".".join(parts)
        node = node_of(module)
        if node == "__main__":
            continue  # `python -m resnest_zoo`: the command line's entry
        graph.setdefault(node, set())
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = _skipped(tree)
        for statement in ast.walk(tree):
            if id(statement) in skip:
                continue
            targets: list[str] = []
            if isinstance(statement, ast.Import):
                targets = [alias.name for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom):
                if statement.level:
                    base = parts if is_package else parts[:-1]
                    base = base[: len(base) - (statement.level - 1)]
                    prefix = ".".join(base + ([statement.module] if statement.module else []))
                else:
                    prefix = statement.module or ""
                targets = [prefix] if statement.module else [f"{prefix}.{alias.name}" for alias in statement.names]
            for target in targets:
                other = node_of(target)
                if other and other != node and other != "__main__":
                    graph[node].add(other)
    return graph


def layers(graph: dict[str, set[str]] | None = None) -> list[list[str]]:
    """The nodes by layer, bottom first: a node's layer is one above the highest of what it imports."""
    graph = imports() if graph is None else graph
    level: dict[str, int] = {}

    def depth(node: str, path: tuple[str, ...]) -> int:
        if node in path:
            raise SystemExit(f"import cycle: {' -> '.join(path[path.index(node):] + (node,))}")
        if node not in level:
            level[node] = 1 + max((depth(other, path + (node,)) for other in graph.get(node, ())), default=-1)
        return level[node]

    for node in graph:
        depth(node, ())
    rows: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for node in sorted(level):
        rows[level[node]].append(node + ("/" if (PACKAGE / node).is_dir() else ".py"))
    return rows


def _box(x: float, y: float, w: float, h: float, text: str, fill: str, stroke: str = "#3f51b5", size: int = 13) -> str:
    return (f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' rx='6' fill='{fill}' stroke='{stroke}'/>"
            f"<text x='{x + w / 2:.1f}' y='{y + h / 2 + size * 0.35:.1f}' text-anchor='middle' font-size='{size}' {FONT}>"
            f"{escape(text)}</text>")


def layers_svg(rows: list[list[str]] | None = None) -> str:
    """The layer figure: one band per layer, the top of the stack first; arrows would be too many, so the rule is
    written on it: a module imports only from the bands below its own."""
    rows = layers() if rows is None else rows
    width, band, gap, left = 980, 46, 10, 110
    height = 70 + len(rows) * (band + gap) + 30
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>",
             "<title>resnest_zoo: layer order, computed from the imports</title>",
             f"<rect width='{width}' height='{height}' fill='white'/>",
             f"<text x='20' y='28' font-size='16' font-weight='bold' {FONT}>resnest_zoo: the layers, top to bottom</text>",
             f"<text x='20' y='50' font-size='12' {FONT}>Each module imports only from the layers below its own "
             "(computed from every import in resnest_zoo/ by docs/make_diagrams.py)</text>"]
    for index, row in enumerate(reversed(rows)):
        layer = len(rows) - 1 - index
        y = 66 + index * (band + gap)
        shade = "#e8eaf6" if index % 2 == 0 else "#f5f5fb"
        parts.append(f"<rect x='10' y='{y - 4}' width='{width - 20}' height='{band + 8}' fill='{shade}' rx='4'/>")
        parts.append(f"<text x='20' y='{y + band / 2 + 5:.1f}' font-size='12' fill='#555' {FONT}>layer {layer}</text>")
        slot = (width - left - 20) / max(len(row), 1)
        w = min(slot - 10, 170)
        for i, name in enumerate(row):
            x = left + i * slot + (slot - w) / 2
            parts.append(_box(x, y, w, band - 6, name, "white"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- the batch pipeline --------------------------------------------------------------------------------------

def pipeline_svg() -> str:
    """Readers (DataLoader worker processes) -> the network on the device -> writer threads."""
    width, height = 980, 270
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}'>",
             "<title>Batch prediction: readers, network, writers</title>",
             "<defs><marker id='arrow' markerWidth='10' markerHeight='8' refX='9' refY='4' orient='auto'>"
             "<path d='M0,0 L10,4 L0,8 z' fill='#3f51b5'/></marker></defs>",
             f"<rect width='{width}' height='{height}' fill='white'/>",
             f"<text x='20' y='28' font-size='16' font-weight='bold' {FONT}>Batch prediction: predict_stream and "
             "predict_to_folder</text>"]

    def column(x: float, title: str, boxes: list[str], note: list[str], fill: str) -> None:
        parts.append(f"<text x='{x + 87}' y='66' text-anchor='middle' font-size='13' font-weight='bold' {FONT}>"
                     f"{escape(title)}</text>")
        for i, text in enumerate(boxes):
            parts.append(_box(x, 80 + i * 44, 175, 34, text, fill, size=12))
        for i, text in enumerate(note):
            parts.append(f"<text x='{x}' y='{228 + i * 16}' font-size='11' fill='#444' {FONT}>{escape(text)}</text>")

    def arrow(x1: float, x2: float, y: float, label: str) -> None:
        parts.append(f"<line x1='{x1}' y1='{y}' x2='{x2}' y2='{y}' stroke='#3f51b5' stroke-width='2' "
                     "marker-end='url(#arrow)'/>")
        parts.append(f"<text x='{(x1 + x2) / 2}' y='{y - 8}' text-anchor='middle' font-size='11' {FONT}>"
                     f"{escape(label)}</text>")

    column(20, "files", ["folders, globs, --list FILE", "sorted work list", "rank i mod WORLD_SIZE"],
           ["skips inputs already done", "(a rerun resumes)"], "#fff8e1")
    column(265, "readers (processes)", ["decode, EXIF-rotate", "keep-ratio resize", "normalise"],
           ["DataLoader workers (--workers)", "a bad file: reported, never dropped"], "#e8f5e9")
    column(510, "network (device)", ["batches of one size", "forward (GPU or CPU)", "resize back + argmax"],
           ["--batch-size images a pass", "on the device, in order"], "#e8eaf6")
    column(755, "writers (threads, to a folder)", ["encode PNG / NPY", "write NAME.partial", "rename into place"],
           ["--writers threads, bounded queue", "a manifest.jsonl line per input"], "#fce4ec")
    arrow(197, 263, 141, "paths")
    arrow(442, 508, 141, "tensors")
    arrow(687, 753, 141, "label maps")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


FIGURES = {"layers.svg": layers_svg, "batch_pipeline.svg": pipeline_svg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale figures (exit 1 if any)")
    args = parser.parse_args(argv)
    outputs = {IMAGES / name: draw() for name, draw in FIGURES.items()}
    return update(outputs, check=args.check, command="python docs/make_diagrams.py")

if __name__ == "__main__":
    sys.exit(main())
