"""``resnest-zoo cache list | verify | clear``: what the cache folder holds, checking it again, and deleting it."""
from __future__ import annotations

import argparse

from .common import CommandError, add_cache_dir, human_size, print_table
from .exit_codes import ExitCode

__all__ = ["register"]


def _list(args: argparse.Namespace) -> int:
    from ..weights.cache import cached_files

    records = cached_files(args.cache_dir)
    rows = [[r.kind + (" (in use)" if r.in_use else ""), r.entry.name if r.entry else "-", human_size(r.size),
             str(r.path)] for r in records]
    if rows:
        print_table(rows, ["kind", "entry", "size", "path"])
    else:
        print("the cache holds no resnest_zoo files")
    return ExitCode.OK


def _verify(args: argparse.Namespace) -> int:
    from ..weights.audit import verify_cache

    results = verify_cache(args.cache_dir, fix=args.fix)
    for result in results:
        print(f"{result.status:<9} {result.file.path}: {result.detail}{' -- removed' if result.removed else ''}")
    damaged = [r for r in results if r.status == "damaged"]
    removed = sum(r.removed for r in damaged)
    print(f"{len(results)} file(s) checked, {len(damaged)} damaged" + (f", {removed} removed" if args.fix else ""))
    if damaged and not args.fix:
        print("run `resnest-zoo cache verify --fix` to delete the damaged files: the next load gets them again")
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def _clear(args: argparse.Namespace) -> int:
    from ..weights.cache import STALE_SECONDS, cached_files, clear_cache

    if bool(args.segmentor) != bool(args.dataset):
        raise CommandError("cache clear takes both SEGMENTOR and DATASET, or neither (everything)", ExitCode.USAGE)
    if not args.yes:
        raise CommandError("cache clear deletes files: add --yes to confirm", ExitCode.USAGE)
    removed = clear_cache(args.cache_dir, segmentor=args.segmentor, dataset=args.dataset)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} file(s) removed")
    kept = [r for r in cached_files(args.cache_dir) if r.in_use]
    if kept:
        print(f"kept {len(kept)} temporary file(s) that a running download may own (written less than "
              f"{STALE_SECONDS:.0f} s ago): {', '.join(str(r.path) for r in kept)}")
    return ExitCode.OK


def register(add) -> None:
    """Add the ``cache`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("cache", "List, check again or delete cached checkpoints.")
    p.add_argument("action", choices=["list", "verify", "clear"],
                   help="list: show cached files; verify: re-hash them against their digests; clear: delete them")
    p.add_argument("segmentor", nargs="?", help="with DATASET: clear only this entry's files")
    p.add_argument("dataset", nargs="?", help="with SEGMENTOR: clear only this entry's files")
    p.add_argument("--yes", action="store_true", help="confirm deletion for clear")
    p.add_argument("--fix", action="store_true", help="verify: delete damaged files, so the next load gets them again")
    add_cache_dir(p)
    p.set_defaults(handler=lambda args: {"list": _list, "verify": _verify, "clear": _clear}[args.action](args))
