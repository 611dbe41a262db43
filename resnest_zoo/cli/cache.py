"""``resnest-zoo cache list | verify | clear``: what the cache folder holds, checking it again, and deleting it."""
from __future__ import annotations

import argparse

from .common import CommandError, add_cache_dir, add_models, human_size, print_table, selected_models
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

    everything = not args.models and not args.segmentor and not args.dataset
    models = [] if everything else selected_models(args, "cache clear")
    saved = [str(name) for name in models if name.saved is not None]
    if saved:
        raise CommandError(f"{', '.join(saved)}: saved models are not in this cache (a Hub model lives in the Hugging "
                           "Face cache: `hf cache rm`)", ExitCode.USAGE)
    if not args.yes:
        raise CommandError("cache clear deletes files: add --yes to confirm", ExitCode.USAGE)
    removed = []
    for name in models or [None]:
        removed += clear_cache(args.cache_dir, segmentor=name and name.segmentor, dataset=name and name.dataset)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} file(s) removed")
    kept = [r for r in cached_files(args.cache_dir) if r.in_use]
    if kept:
        print(f"kept {len(kept)} temporary file(s) that a running download may own (written less than "
              f"{STALE_SECONDS:.0f} s ago): {', '.join(str(r.path) for r in kept)}")
    return ExitCode.OK


_TAKES = {"list": (), "verify": ("--fix",), "clear": ("-m", "--yes")}
"""The options each action takes; any other is a usage error, never silently ignored."""


def _run(args: argparse.Namespace) -> int:
    given = {"-m": bool(args.models or args.segmentor or args.dataset), "--yes": args.yes, "--fix": args.fix}
    unused = [flag for flag, value in given.items() if value and flag not in _TAKES[args.action]]
    if unused:
        takes = ", ".join(_TAKES[args.action]) or "no options but --cache-dir"
        raise CommandError(f"cache {args.action} does not take {', '.join(unused)} (it takes {takes})", ExitCode.USAGE)
    return {"list": _list, "verify": _verify, "clear": _clear}[args.action](args)


def register(add) -> None:
    """Add the ``cache`` command; ``add(name, help)`` returns a new sub-parser."""
    p = add("cache", "List, check again or delete cached checkpoints.")
    p.add_argument("action", choices=list(_TAKES),
                   help="list: show cached files; verify: re-hash them against their digests; clear: delete them "
                        "(every checkpoint's files, or those of the models given with -m)")
    add_models(p, several=False, legacy=True, extra="; with clear: delete only its files (repeat for several)")
    p.add_argument("--yes", action="store_true", help="confirm deletion for clear")
    p.add_argument("--fix", action="store_true", help="verify: delete damaged files, so the next load gets them again")
    add_cache_dir(p)
    p.set_defaults(handler=_run)
