"""The locked download: one file, from the first source that supplies it, checked before anything trusts it.

:func:`obtain` takes the file's lock (only so that processes do not download it twice at once), uses the cached file
if it verifies, and otherwise asks each source in turn for the file, which it checks in this order:

1. size, then sha256 of the bytes received, against :func:`expected`: the pin, else the publisher's digest
   (:mod:`.release`), else the record of the first download;
2. structure: the file reads safely as a checkpoint whose tensors pass the wanted :data:`Check`;
3. the very file whose bytes were hashed is renamed into place -- unless another process placed the file meanwhile:
   then ours is discarded and theirs used once its digest is checked;
4. only then is the digest recorded.

Each step returns what it found: the verified :class:`~.integrity.FileDigest` and, when the file was read while
checking it, its tensors. A file that fails a check is removed together with its record and the copy made from it,
and the error says what was removed, so a rerun once the source is fixed just works. A cache folder that cannot be
written is used as it is: a cached file is verified in place and nothing is changed.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from .. import environment
from ..catalogue import CheckpointEntry
from ..errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotAvailableError,
    IntegrityError,
    UnsafeCheckpointError,
)
from . import cache, release
from .checkpoint import read_state_dict
from .integrity import Expected, FileDigest, mismatch, read_record, sha256_file, warn_first_use, write_record
from .model_file import source_digest
from .transfer import Received, TransferError

if TYPE_CHECKING:
    from .settings import SourceSettings

__all__ = ["Check", "Source", "Wanted", "Obtained", "expected", "obtain"]

Check = Callable[[Mapping[str, torch.Tensor], str], None]
"""What a file's tensors must pass before the file is trusted: ``check(state_dict, name)`` raises
:class:`~resnest_zoo.CheckpointMismatchError` (or another checkpoint error) when they do not fit the model; the models
supply it (:func:`resnest_zoo.models.strict.fits`), this layer only calls it."""

Obtained = tuple[FileDigest, "dict[str, torch.Tensor] | None"]
"""A verified file, and its tensors when they were read while checking it."""


@dataclass(frozen=True)
class Wanted:
    """One file to obtain: where it goes, a name for messages, the URL its publisher is asked about, the pin and size
    it must have (and where the pin comes from), its catalogue entry if any, and what its tensors must pass (without
    ``check`` the file must only read safely as a checkpoint)."""

    target: Path
    label: str
    url: str
    pin: str | None = None
    pin_from: str = "sha256="
    size: int | None = None
    entry: CheckpointEntry | None = None
    check: Check | None = None


class Source(Protocol):
    """A place to get the file from: :meth:`fetch` returns it complete (not yet checked), or raises TransferError."""

    name: str
    offline_ok: bool  # can answer without the network (a local folder, the Hugging Face cache)

    def fetch(self, wanted: Wanted, expected: Expected, settings: SourceSettings, progress: bool,
              resume: bool) -> Received: ...


def expected(wanted: Wanted, asked: release.Published | str | None = None) -> Expected:
    """What the file must be: the pin; else the publisher's digest (``asked``: its answer or why there is none, else
    the answer kept beside the file); else the record of its first download."""
    published = asked if isinstance(asked, release.Published) else release.cached(wanted.url, wanted.target)
    size, size_from = wanted.size, "the catalogue"
    if size is None and published is not None and published.size is not None:
        size, size_from = published.size, published.source
    if wanted.pin is not None:
        return Expected(wanted.pin, wanted.pin_from, size, size_from)
    if published is not None and published.sha256 is not None:
        return Expected(published.sha256, f"the publisher's digest, {published.source}", size, size_from)
    if published is not None:
        why = f"its release lists its size but no digest ({published.source})"
    else:
        why = asked if isinstance(asked, str) else "no digest of its publisher is known"
    if wanted.entry is None or wanted.url != wanted.entry.url:
        why = f"{wanted.url} was given without sha256= ({why})"
    record = read_record(wanted.target)
    digest_from = f"the record of its first download, {cache.record_path(wanted.target)}" if record else ""
    return Expected(record, digest_from, size, size_from, unpinned=why)


def _ask(wanted: Wanted, settings: SourceSettings) -> release.Published | str | None:
    """The publisher's answer for an unpinned file (kept beside it once read), or why there is none."""
    if wanted.pin is not None:
        return None
    if settings.offline:
        return f"offline mode, {settings.offline_reason}"
    try:
        return release.published(wanted.url, wanted.target, api=settings.github_api, token=settings.github_token,
                                 policy=settings.policy)
    except release.PublisherUnavailable as exc:
        return exc.reason


def _hashed(path: Path, known: Expected) -> tuple[FileDigest, str | None]:
    """The digest of ``path``, and why it is not the expected file (None: it is)."""
    digest = FileDigest(path, sha256_file(path), path.stat().st_size)
    return digest, mismatch(digest.sha256, digest.size, known)


def _read(wanted: Wanted, path: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` if it reads safely as a checkpoint and passes the wanted check."""
    tensors = read_state_dict(path, source=name)
    if wanted.check is not None:
        wanted.check(tensors, name)
    return tensors


def _discard(wanted: Wanted, path: Path | None, sha256: str) -> list[Path]:
    """Remove a file that failed a check (None: one kept elsewhere), the record of its digest and the fast-reload copy
    made from it; return what was removed."""
    doomed = [path] if path is not None else []
    try:
        recorded = read_record(wanted.target) == sha256
    except IntegrityError:  # a damaged record describes nothing: it goes too
        recorded = True
    doomed += [cache.record_path(wanted.target)] if recorded else []
    copy = cache.safetensors_path(wanted.target.parent, wanted.entry) if wanted.entry is not None else None
    if copy is not None and copy.is_file() and source_digest(copy) in (sha256, None):
        doomed.append(copy)
    return cache.remove(doomed)


def _trusted(wanted: Wanted, path: Path, sha256: str, name: str, *, kept: bool = False) -> dict[str, torch.Tensor]:
    """:func:`_read`; on failure, :func:`_discard` the file (unless ``kept`` in another library's cache) and raise
    the same error saying what was removed."""
    try:
        return _read(wanted, path, name)
    except (CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError) as exc:
        removed = _discard(wanted, None if kept else path, sha256)
        said = f"Removed from the cache: {', '.join(map(str, removed))}. " if removed else ""
        left = f"Left in the Hugging Face cache: {path} (remove it with `hf cache rm`). " if kept else ""
        raise type(exc)(f"{exc}\n{said}{left}Nothing of it is trusted, so once its source is fixed, the same call "
                        "gets it again.") from None


def _done(wanted: Wanted, digest: FileDigest, tensors: dict[str, torch.Tensor] | None, known: Expected) -> Obtained:
    if known.unpinned:
        warn_first_use(wanted.label, known.unpinned)
    return digest, tensors


def _cached(wanted: Wanted, settings: SourceSettings, attempts: list[tuple[str, str]]) -> Obtained | None:
    """The cached file if it verifies; otherwise remove it (and what came from it), note why, and return None."""
    known = expected(wanted)
    if known.sha256 is None:  # first sight of this file (placed by hand, by torch.hub, or before a crash)
        known = expected(wanted, _ask(wanted, settings))
    digest, problem = _hashed(wanted.target, known)
    if problem is not None:
        removed = ", ".join(map(str, _discard(wanted, wanted.target, digest.sha256)))
        attempts.append((f"cached file {wanted.target}", f"failed verification ({problem}); removed {removed}"))
        return None
    tensors = None if known.sha256 else _trusted(wanted, wanted.target, digest.sha256, f"cached file {wanted.target}")
    if read_record(wanted.target) != digest.sha256:
        write_record(wanted.target, digest.sha256)
    return _done(wanted, digest, tensors, known)


def _read_only(wanted: Wanted, error: OSError, force: bool) -> Obtained:
    """A cache folder that cannot be written (a shared, pre-filled one): verify the file in place, change nothing."""
    why = f"the cache folder {wanted.target.parent} is not writable ({error.strerror or error})"
    target, name = wanted.target, wanted.target.name
    if force or not target.is_file():
        raise CheckpointNotAvailableError(f"cannot download {name}: {why}. Choose a writable cache folder (--cache-dir, "
                                          f"{environment.CACHE.name} or cache_dir=), or place {name} in it by hand.")
    known = expected(wanted)
    digest, problem = _hashed(target, known)
    if problem is not None:
        raise CheckpointNotAvailableError(f"cached file {target} failed verification ({problem}) and {why}, so it was "
                                          f"not deleted: delete or replace {target}")
    tensors = None if known.sha256 else _read(wanted, target, f"cached file {target} (in a read-only cache folder)")
    return _done(wanted, digest, tensors, known)


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


def _accept(wanted: Wanted, received: Received, source: str, known: Expected, force: bool) -> Obtained:
    """Check a file received from ``source`` (module docstring) and place it, unless it is kept in another library's
    cache: then it stays there, and only its digest is recorded."""
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
    name = f"{received.path if received.kept else wanted.label} from {source}"
    tensors = _trusted(wanted, received.path, received.sha256, name, kept=received.kept)
    path = received.path if received.kept else wanted.target
    if not received.kept:
        _place(wanted, received, force)
    write_record(wanted.target, received.sha256)
    return _done(wanted, FileDigest(path, received.sha256, path.stat().st_size), tensors, known)


def _fetched(source: Source, wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool,
             force: bool) -> Obtained:
    received = source.fetch(wanted, known, settings, progress, True)
    try:
        return _accept(wanted, received, source.name, known, force)
    except (TransferError, CheckpointFormatError):
        if not received.resumed:
            raise
    # its first bytes came from an earlier, interrupted download (removed now): once more from scratch
    return _accept(wanted, source.fetch(wanted, known, settings, progress, False), source.name, known, force)


def obtain(wanted: Wanted, sources: Sequence[Source], settings: SourceSettings, *, progress: bool, hint: str,
           force: bool = False) -> Obtained:
    """The verified file wanted, and its tensors when they were read while checking it: the cached file, or the
    first that a source supplies and that passes every check (see the module docstring). ``hint`` says how to supply
    the file by hand, for the error; ``force`` downloads it again even when cached.

    Raises:
        CheckpointNotAvailableError: no source supplied a verified file (each is listed with its reason), or the
            cache folder cannot be written.
        CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError: a source supplied a file that is not
            a safe checkpoint fitting the entry (it was removed).
    """
    def waiting() -> None:
        if progress:
            print(f"waiting for another process to finish downloading {wanted.label} ...", file=sys.stderr)

    stack = ExitStack()
    try:
        stack.enter_context(cache.lock(wanted.target, on_wait=waiting))
    except OSError as exc:
        return _read_only(wanted, exc, force)
    with stack:
        attempts: list[tuple[str, str]] = []
        if not force and wanted.target.is_file():
            found = _cached(wanted, settings, attempts)
            if found is not None:
                return found
        known = expected(wanted, _ask(wanted, settings))
        for source in sources:
            if settings.offline and not source.offline_ok:
                attempts.append((source.name, f"skipped: offline mode ({settings.offline_reason})"))
                continue
            try:
                return _fetched(source, wanted, known, settings, progress, force)
            except TransferError as exc:
                attempts.append((source.name, exc.reason))
    what = wanted.label + (f" ({wanted.entry.title})" if wanted.entry is not None else "")
    offline = f" in offline mode ({settings.offline_reason})" if settings.offline else ""
    lines = [f"could not get {what}{offline}. Sources tried:", *(f"  - {s}: {r}" for s, r in attempts), hint]
    raise CheckpointNotAvailableError("\n".join(lines), attempts)
