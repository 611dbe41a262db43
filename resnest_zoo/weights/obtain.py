"""The locked download and the rules of trust: one file, from the first source that supplies it, checked before
anything trusts it.

What a file must be (:func:`expected`): a *pin* (the catalogue's ``sha256`` or the caller's); else the *publisher's*
size and digest (:func:`published`); else the *record* of its first download (``<file>.sha256``), written only once the
file passed every check. :func:`obtain` takes the file's lock (only so that processes do not download it twice at
once), uses the cached file if it verifies, and otherwise asks each source in turn: the size and sha256 of the file
received are checked, then that it reads safely as a checkpoint whose tensors pass the wanted :data:`Check`; then that
very file is renamed into place, and only then is its digest recorded. A file that fails a check is removed with its
record and the copy made from it, and the error says so: a rerun once the source is fixed just works.
"""
from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import requests
import torch

from .. import environment
from ..catalogue import CheckpointEntry
from ..distributed import ranks_from_environment
from ..errors import (CheckpointFormatError, CheckpointMismatchError, CheckpointNotAvailableError, IntegrityError,
                      UnsafeCheckpointError)
from ..files import atomic_write
from . import cache
from .checkpoint import read_state_dict
from .integrity import FileDigest, UnpinnedCheckpointWarning, sha256_file
from .model_file import source_digest
from .transfer import Received, TransferError, get, http_session

if TYPE_CHECKING:
    from .settings import SourceSettings

__all__ = ["Check", "Tensors", "Wanted", "Expected", "Source", "mismatch", "read_record", "published", "expected",
           "warn_unpinned", "obtain"]

Check = Callable[[Mapping[str, torch.Tensor], str], None]
"""What a file's tensors must pass before it is trusted: ``check(state_dict, name)`` raises a checkpoint error when
they do not fit the model (the models supply it: :func:`resnest_zoo.models.strict.fits`)."""
Tensors = dict[str, torch.Tensor]
Found = tuple[FileDigest, "Tensors | None", "Expected"]  # a verified file, its tensors if read, what it had to be
_ASSET = re.compile(r"/(?P<owner>[^/]+)/(?P<repo>[^/]+)/releases/download/(?P<tag>[^/]+)/(?P<name>[^/]+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_unpinned_warned = False


@dataclass(frozen=True)
class Wanted:
    """One file to obtain: where it goes, the URL its publisher is asked about, the pin (and where it comes from) and
    size it must have, its catalogue entry if any, and what its tensors must pass (None: reading safely)."""

    target: Path
    url: str
    pin: str | None = None
    pin_from: str = "sha256="
    size: int | None = None
    entry: CheckpointEntry | None = None
    check: Check | None = None


@dataclass(frozen=True)
class Expected:
    """What a file must be (sha256, size) and where each comes from; ``unpinned``: why only a first download vouches."""

    sha256: str | None = None
    digest_from: str = ""
    size: int | None = None
    size_from: str = ""
    unpinned: str = ""


@dataclass(frozen=True)
class Source:
    """A place to get a file from: ``fetch(wanted, expected, settings, progress)`` returns it (not yet checked) or
    raises TransferError; ``offline_ok``: it answers without the network."""

    name: str
    fetch: Callable[[Wanted, Expected, SourceSettings, bool], Received]
    offline_ok: bool = False


def mismatch(sha256: str, size: int | None, expected: Expected) -> str | None:
    """Why a file with this digest and size (None: not comparable) is not the expected one, size first, or None."""
    if expected.size is not None and size is not None and size != expected.size:
        return f"size mismatch: expected {expected.size} bytes ({expected.size_from}), found {size}"
    if expected.sha256 is not None and sha256 != expected.sha256:
        found = f"{sha256} ({size} bytes)" if size is not None else sha256
        return f"digest mismatch: sha256 expected {expected.sha256} ({expected.digest_from}), found {found}"
    return None


def read_record(path: Path) -> str | None:
    """The digest recorded for ``path`` or None; a damaged record raises :class:`~resnest_zoo.IntegrityError`."""
    record = cache.record_path(path)
    try:
        fields = record.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return None
    if not fields or not _HEX64.fullmatch(fields[0]):
        raise IntegrityError(f"the digest record {record} is damaged (expected '<sha256>  {path.name}'): delete "
                             f"{record} and {path}, and the file will be downloaded and checked again")
    return fields[0]


def _write(path: Path, text: str) -> None:
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def published(wanted: Wanted, settings: SourceSettings | None = None) -> Expected | str:
    """The size and digest the publisher lists for the wanted file, or why there is none: read once from GitHub's
    release API (its assets' ``size`` and ``digest``) and kept beside the file. Without ``settings``, only as kept."""
    note = cache.release_note_path(wanted.target)
    try:
        kept = json.loads(note.read_text(encoding="utf-8"))
        if isinstance(kept, dict) and kept.get("asset_url") == wanted.url:
            source = f"GitHub release API, read {kept.get('read')}"
            return Expected(kept.get("sha256"), f"the publisher's digest, {source}", kept.get("size"), source)
    except (FileNotFoundError, ValueError):
        pass
    match = _ASSET.fullmatch(urlparse(wanted.url).path)
    if settings is None:
        return "no digest of its publisher is known"
    if settings.offline:
        return f"offline mode, {settings.offline_reason}"
    if match is None:
        return "its URL is not a GitHub release asset"
    url = f"{settings.github_api.rstrip('/')}/repos/{match['owner']}/{match['repo']}/releases/tags/{match['tag']}"
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
               **({"Authorization": f"Bearer {settings.github_token}"} if settings.github_token else {})}
    try:
        with http_session(settings.policy) as session, get(session, url, settings.policy, headers) as response:
            asset = _asset(response, match["name"])
    except TransferError as exc:
        asset = exc.reason
    if isinstance(asset, str):
        return f"GitHub release API {url}: {asset}"
    digest = re.fullmatch(r"sha256:([0-9a-fA-F]{64})", str(asset.get("digest")))
    size = asset.get("size") if isinstance(asset.get("size"), int) else None
    _write(note, json.dumps({"asset_url": wanted.url, "api": url, "size": size, "sha256": digest[1].lower() if digest
                             else None, "read": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}"}))
    return published(wanted)  # as kept


def _asset(response: requests.Response, name: str) -> dict[str, Any] | str:
    """What the release API's answer says of asset ``name``, or why it says nothing."""
    if response.status_code == 403 and response.headers.get("X-RateLimit-Remaining") == "0":
        return "rate limit exceeded (HTTP 403; unauthenticated calls are limited to 60 an hour: set GITHUB_TOKEN)"
    if response.status_code != 200:
        return "no such release (HTTP 404)" if response.status_code == 404 else f"HTTP {response.status_code}"
    try:
        found = [a for a in response.json()["assets"] if isinstance(a, dict) and a.get("name") == name]
    except (ValueError, TypeError, KeyError):
        return "the answer is not a release"
    return found[0] if found else f"the release lists no asset named {name}"


def expected(wanted: Wanted, settings: SourceSettings | None = None) -> Expected:
    """What the file must be: the pin; else the publisher's size and digest (asked with ``settings``, else only as
    kept beside the file); else the record of its first download, with the reason why no digest decides."""
    if wanted.pin is not None:
        return Expected(wanted.pin, wanted.pin_from, wanted.size, "the catalogue")
    answer = published(wanted, settings)
    said = answer if isinstance(answer, Expected) else Expected(unpinned=answer)
    why = said.unpinned or f"its release lists its size but no digest ({said.size_from})"
    if wanted.size is not None or said.size is None:
        said = replace(said, size=wanted.size, size_from="the catalogue")
    if said.sha256 is not None:
        return said
    if wanted.entry is None or wanted.url != wanted.entry.url:
        why = f"{wanted.url} was given without sha256= ({why})"
    record = read_record(wanted.target)
    digest_from = f"the record of its first download, {cache.record_path(wanted.target)}" if record else ""
    return replace(said, sha256=record, digest_from=digest_from, unpinned=why)


def warn_unpinned(filename: str, reason: str) -> None:
    """Say in one line, once per process and on rank 0 only (under torchrun), that ``filename`` is checked against the
    digest of its first download only; ``reason`` rides on the warning, which points at the caller's own line."""
    global _unpinned_warned
    if _unpinned_warned or not ranks_from_environment().is_main:
        return
    _unpinned_warned = True
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "resnest_zoo":
        frame, level = frame.f_back, level + 1
    warnings.warn(UnpinnedCheckpointWarning(f"{filename} not pinned: checked against the digest of its first download; "
                                            "pin it with sha256=", reason), stacklevel=level)


def _discard(wanted: Wanted, path: Path | None, sha256: str) -> list[Path]:
    """Remove ``path``, the record of digest ``sha256`` and the fast-reload copy made from it; return what went."""
    doomed = [path] if path is not None else []
    doomed += [cache.record_path(wanted.target)] if read_record(wanted.target) == sha256 else []
    copy = cache.safetensors_path(wanted.target.parent, wanted.entry) if wanted.entry is not None else None
    if copy is not None and copy.is_file() and source_digest(copy) in (sha256, None):
        doomed.append(copy)
    return cache.remove(doomed)


def _trusted(wanted: Wanted, path: Path, sha256: str, name: str, *, kept: bool | None = False) -> Tensors:
    """The tensors of a file that reads safely and fits; else it is discarded with what came from it (unless ``kept``
    in another library's cache; None: where nothing can be removed), and the error says so."""
    try:
        tensors = read_state_dict(path, source=name)
        if wanted.check is not None:
            wanted.check(tensors, name)
        return tensors
    except (CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError) as exc:
        if kept is None:  # (a cache folder that cannot be written: nothing is removed)
            raise
        removed = _discard(wanted, None if kept else path, sha256)
        said = f"Removed from the cache: {', '.join(map(str, removed))}. " if removed else ""
        left = f"Left in the Hugging Face cache: {path} (remove it with `hf cache rm`). " if kept else ""
        raise type(exc)(f"{exc}\n{said}{left}Nothing of it is trusted, so once its source is fixed, the same call "
                        "gets it again.") from None


def _cached(wanted: Wanted, settings: SourceSettings, attempts: list[tuple[str, str]],
            unwritable: str = "") -> Found | None:
    """The cached file if it verifies; else None, the file discarded and why noted -- or, where the folder cannot be
    written (``unwritable`` says why), an error and nothing changed."""
    known = expected(wanted)
    if known.sha256 is None and not unwritable:  # first sight (placed by hand, by torch.hub, before a crash)
        known = expected(wanted, settings)
    digest = FileDigest(wanted.target, sha256_file(wanted.target), wanted.target.stat().st_size)
    problem = mismatch(digest.sha256, digest.size, known)
    if problem is not None and unwritable:
        raise CheckpointNotAvailableError(f"cached file {wanted.target} failed verification ({problem}) and "
                                          f"{unwritable}, so it was not deleted: delete or replace {wanted.target}")
    if problem is not None:
        removed = ", ".join(map(str, _discard(wanted, wanted.target, digest.sha256)))
        attempts.append((f"cached file {wanted.target}", f"failed verification ({problem}); removed {removed}"))
        return None
    name = f"cached file {wanted.target}" + (" (in a read-only cache folder)" if unwritable else "")
    tensors = None
    if known.sha256 is None:  # no digest vouched for it: it must at least read safely and fit
        tensors = _trusted(wanted, wanted.target, digest.sha256, name, kept=None if unwritable else False)
    if not unwritable and read_record(wanted.target) != digest.sha256:
        _write(cache.record_path(wanted.target), f"{digest.sha256}  {wanted.target.name}\n")
    return digest, tensors, known


def _accept(wanted: Wanted, received: Received, source: str, known: Expected, force: bool) -> Found:
    """Check a file received, rename it into place (unless kept in another library's cache), record its digest."""
    problem = mismatch(received.sha256, received.size, known)
    if problem is not None and received.kept:
        raise TransferError(f"{problem} for {received.path} in the Hugging Face cache (left there: delete it with "
                            "`hf cache rm` or huggingface_hub's scan_cache_dir)")
    if problem is not None:
        cache.remove([received.path])
        if known.unpinned and known.sha256:
            problem += (f"; if the published file really changed, delete the record {cache.record_path(wanted.target)}"
                        " and download again")
        raise TransferError(problem + "; the downloaded file was deleted")
    name = f"{received.path if received.kept else wanted.target.name} from {source}"
    tensors = _trusted(wanted, received.path, received.sha256, name, kept=received.kept)
    if not received.kept:
        _place(wanted, received, force)
    _write(cache.record_path(wanted.target), f"{received.sha256}  {wanted.target.name}\n")
    path = received.path if received.kept else wanted.target
    return FileDigest(path, received.sha256, path.stat().st_size), tensors, known


def _place(wanted: Wanted, received: Received, force: bool) -> None:
    """Rename the received file into place, unless another process placed the file meanwhile (or took ours, judging
    it abandoned, and placed its own): then theirs is used once its digest is checked."""
    if force or not wanted.target.exists():
        try:
            os.replace(received.path, wanted.target)
            return
        except FileNotFoundError:
            if not wanted.target.exists():
                raise TransferError(f"{received.path} was taken by another process (it judged it abandoned) before "
                                    "it could be placed") from None
    cache.remove([received.path])
    found = sha256_file(wanted.target)
    if found != received.sha256:
        raise TransferError(f"another process placed {wanted.target} meanwhile (sha256 {found}) while this one "
                            f"received sha256 {received.sha256}: the source changed during the download")


def obtain(wanted: Wanted, sources: Sequence[Source], settings: SourceSettings, *, progress: bool, hint: str,
           force: bool = False) -> tuple[FileDigest, Tensors | None]:
    """The verified file wanted, and its tensors when they were read while checking it: the cached file, or the first
    that a source supplies and that passes every check; ``force``: not the cached one. Raises
    :class:`~resnest_zoo.CheckpointNotAvailableError` listing each source with its reason, then ``hint``, or a
    checkpoint error (format, unsafe, mismatch) for a file that was removed."""
    attempts: list[tuple[str, str]] = []
    with ExitStack() as stack:
        try:
            stack.enter_context(cache.lock(wanted.target))
        except OSError as exc:  # a cache folder that cannot be written: the cached file as it is, or nothing
            why = f"the cache folder {wanted.target.parent} is not writable ({exc.strerror or exc})"
            if force or not wanted.target.is_file():
                name = wanted.target.name
                raise CheckpointNotAvailableError(f"cannot download {name}: {why}. Choose a writable cache folder "
                                                  f"(--cache-dir, {environment.CACHE.name} or cache_dir=), or place "
                                                  f"{name} in it by hand.") from None
            found = _cached(wanted, settings, attempts, unwritable=why)
        else:
            found = _cached(wanted, settings, attempts) if not force and wanted.target.is_file() else None
        if found is None:
            known = expected(wanted, settings)
            for source in sources:
                if settings.offline and not source.offline_ok:
                    attempts.append((source.name, f"skipped: offline mode ({settings.offline_reason})"))
                    continue
                try:
                    found = _accept(wanted, source.fetch(wanted, known, settings, progress), source.name, known, force)
                    break
                except TransferError as exc:
                    attempts.append((source.name, exc.reason))
    if found is None:
        what = wanted.target.name + (f" ({wanted.entry.title})" if wanted.entry is not None else "")
        offline = f" in offline mode ({settings.offline_reason})" if settings.offline else ""
        lines = [f"could not get {what}{offline}. Sources tried:", *(f"  - {s}: {r}" for s, r in attempts), hint]
        raise CheckpointNotAvailableError("\n".join(lines), attempts)
    if found[2].unpinned:
        warn_unpinned(wanted.target.name, found[2].unpinned)
    return found[0], found[1]
