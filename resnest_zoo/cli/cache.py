"""``resnest-zoo cache list | clear``: what the cache folder holds, and deleting it."""
from __future__ import annotations

import argparse

from .common import CommandError, add_cache_dir, human_size, print_table
from .exit_codes import ExitCode

__all__ = ["register"]


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..weights.cache import cached_files, clear_cache

    if args.action == "list":
        records = cached_files(args.cache_dir)
        rows = [[r.kind, r.entry.name if r.entry else "-", human_size(r.size), str(r.path)] for r in records]
        if rows:
            print_table(rows, ["kind", "entry", "size", "path"])
        else:
            print("the cache holds no resnest_zoo files")
        return ExitCode.OK
    if bool(args.segmentor) != bool(args.dataset):
        raise CommandError("cache clear takes both SEGMENTOR and DATASET, or neither (everything)", ExitCode.USAGE)
    if not args.yes:
        raise CommandError("cache clear deletes files: add --yes to confirm", ExitCode.USAGE)
    removed = clear_cache(args.cache_dir, segmentor=args.segmentor, dataset=args.dataset)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} file(s) removed")
    return ExitCode.OK


def register(add) -> None:
    """Add the ``cache`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("cache", "List or delete cached checkpoints.")
    p.add_argument("action", choices=["list", "clear"], help="list: show cached files; clear: delete them")
    p.add_argument("segmentor", nargs="?", help="with DATASET: clear only this entry's files")
    p.add_argument("dataset", nargs="?", help="with SEGMENTOR: clear only this entry's files")
    p.add_argument("--yes", action="store_true", help="confirm deletion for clear")
    add_cache_dir(p)
    p.set_defaults(handler=_cmd_cache)
