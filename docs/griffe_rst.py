"""A griffe extension that lets the package's docstrings, written for Python readers, render as Markdown.

The docstrings use a few reStructuredText habits that read well in ``help()`` but not on a web page; this rewrites
them as the API reference is built (the source is untouched):

* roles: ``:func:`~resnest_zoo.load``` becomes ``load`` as code (``~`` keeps the last dotted part);
* literal blocks: a paragraph ending in ``::`` followed by an indented block becomes a fenced code block;
* ``.. warning::`` / ``.. note::`` directives become admonitions;
* ``>>>`` examples become fenced ``pycon`` blocks;
* parameters described together (``device, dtype: ...`` under ``Args:`` or ``Attributes:``) become one entry each, with the
  description they share.

It is loaded by mkdocstrings (``mkdocs.yml``: ``extensions: [docs/griffe_rst.py]``).
"""
from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|ref):`(~?)([^`<]+?)(?:\s*<([^>]+)>)?`")
SECTION = re.compile(r"^(\s*)(?:Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters|Attributes)"
                     r":\s*$")
GROUPED = re.compile(r"^(\s*)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+):(\s.*|)$")
DIRECTIVE = re.compile(r"^(\s*)\.\. (warning|note|tip|important|caution|danger|seealso)::\s*(.*)$")


def _role(match: re.Match[str]) -> str:
    tilde, text, target = match.groups()
    if target:  # :ref:`title <target>`: the title
        return f"`{text.strip()}`"
    text = text.strip().lstrip(".")
    if tilde:
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, base: int) -> int:
    """Index after the indented block that starts at ``start`` (blank lines inside it included)."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return end


def _ungroup(lines: list[str]) -> list[str]:
    """``a, b: text`` entries of parameter sections as one entry per name, each with the shared description."""
    out: list[str] = []
    section: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = SECTION.match(line)
        if header:
            section = len(header.group(1))
        elif section is not None and line.strip() and _indent(line) <= section:
            section = None
        grouped = GROUPED.match(line) if section is not None else None
        if grouped and _indent(line) > section:
            pad, names, first = grouped.groups()
            end = _block(lines, i + 1, len(pad))
            for name in (n.strip() for n in names.split(",")):
                out.append(f"{pad}{name}:{first}")
                out.extend(lines[i + 1:end])
            i = end
            continue
        out.append(line)
        i += 1
    return out


def to_markdown(text: str) -> str:
    """The docstring ``text`` with its reStructuredText habits rewritten as Markdown (see the module docstring)."""
    lines = _ungroup(text.splitlines())
    out: list[str] = []
    i = 0
    fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fence = not fence
            out.append(line)
            i += 1
            continue
        if fence:
            out.append(line)
            i += 1
            continue
        directive = DIRECTIVE.match(line)
        if directive:
            pad, kind, title = directive.groups()
            kind = {"seealso": "info", "important": "warning", "caution": "warning"}.get(kind, kind)
            out.append(f'{pad}!!! {kind}' + (f' "{title}"' if title else ""))
            end = _block(lines, i + 1, len(pad))
            body = [ln for ln in lines[i + 1:end]]
            depth = min((_indent(ln) for ln in body if ln.strip()), default=len(pad) + 4)
            out.extend(f"{pad}    {ROLE.sub(_role, ln[depth:])}" if ln.strip() else "" for ln in body)
            i = end
            continue
        if line.lstrip().startswith(">>>"):
            pad = line[: _indent(line)]
            out.append(f"{pad}```pycon")
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= len(pad):
                out.append(lines[i])
                i += 1
            out.append(f"{pad}```")
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                head = line.rstrip()[:-2].rstrip()
                if head:
                    out.append(ROLE.sub(_role, head) + ("" if head.endswith(":") else ":"))
                    out.append("")
                end = _block(lines, j, base)
                body = lines[j:end]
                depth = min(_indent(ln) for ln in body if ln.strip())
                pad = " " * base
                out.append(f"{pad}```text")
                out.extend(f"{pad}{ln[depth:]}" if ln.strip() else "" for ln in body)
                out.append(f"{pad}```")
                i = end
                continue
        out.append(ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class RestructuredTextHabits(griffe.Extension):
    """Rewrites every docstring with :func:`to_markdown` when griffe reads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
