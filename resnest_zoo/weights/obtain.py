"""The locked download: one file, from the first source that supplies it, checked before anything trusts it.

:func:`obtain` takes the file's lock (only so that processes do not download it twice at once), uses the
cached file if it verifies, and otherwise asks each source (:mod:`.sources`) in turn for the bytes, which
:meth:`Job.accept` checks in this order:

1. size, then sha256 of the bytes received, against :meth:`Job.expected`: the pin, else the publisher's digest
   (GitHub release API, :mod:`.release`), else the record of the first download;
2. structure: the file reads safely as a checkpoint whose tensors pass the job's check (:data:`Check`: they fit
   the model);
3. the very file whose bytes were hashed is renamed into place -- unless another process placed the file
   meanwhile: then ours is discarded and theirs used once its digest is checked;
4. only then is the digest recorded.

A file that fails a check is removed together with its record and the copy made from it, and the error says
what was removed, so a rerun once the source is fixed just works. A cache folder that cannot be written is used
as it is: a cached file is verified in place and nothing is changed.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import torch
from tqdm.auto import tqdm

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
from .model_file import read_model_metadata
from .transfer import Received, TransferError

if TYPE_CHECKING:
    from .settings import SourceSettings

__all__ = ["Check", "Source", "Job", "obtain"]

Check = Callable[[Mapping[str, torch.Tensor], str], None]
"""What a file's tensors must pass before the file is trusted: ``check(state_dict, name)`` raises
:class:`~resnest_zoo.CheckpointMismatchError` (or another checkpoint error) when they do not fit the model; the
models supply it (:func:`resnest_zoo.models.strict.fits`), this layer only calls it."""

_CONTENT_ERRORS = (CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError)


class Source(Protocol):
    """A place to get the file from: :meth:`fetch` returns the accepted file or raises TransferError."""

    name: str
    offline_ok: bool  # can answer without the network (a local folder, the Hugging Face cache)

    def fetch(self, job: Job) -> FileDigest: ...


@dataclass
class Job:
    """One file to obtain: where it goes, what it must be, and what was learnt about it on the way.

    ``entry`` is the catalogue entry, if any; ``check`` what the file's tensors must pass (see :data:`Check`;
    without it the file must only read safely as a checkpoint). ``state_dict`` holds the tensors of the file this
    job checked, if any.
    """

    target: Path
    settings: SourceSettings
    progress: bool
    label: str
    asset_url: str
    pin: str | None = None
    pin_from: str = "the catalogue's pin"
    size: int | None = None
    entry: CheckpointEntry | None = None
    check: Check | None = None
    force: bool = False
    publisher: release.Published | None = None
    publisher_problem: str | None = None
    state_dict: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.pin is None:
            self.publisher = release.cached(self.asset_url, self.target)

    def expected(self) -> Expected:
        """What the file must be: the pin, else the publisher's digest, else the record of its first download."""
        size, size_from, published = self.size, "the catalogue", self.publisher
        if size is None and published is not None and published.size is not None:
            size, size_from = published.size, published.source
        if self.pin is not None:
            return Expected(self.pin, self.pin_from, size, size_from)
        if published is not None and published.sha256 is not None:
            return Expected(published.sha256, f"the publisher's digest, {published.source}", size, size_from)
        record = read_record(self.target)
        digest_from = f"the record of its first download, {cache.record_path(self.target)}"
        return Expected(record, digest_from if record else "", size, size_from, first_use=True)

    def ask_publisher(self) -> None:
        """Read the publisher's size and digest (once; kept beside the file) unless a pin decides or offline."""
        if self.pin is not None or self.publisher is not None or self.publisher_problem is not None:
            return
        if self.settings.offline:
            self.publisher_problem = f"offline mode, {self.settings.offline_reason}"
            return
        try:
            self.publisher = release.published(self.asset_url, self.target, api=self.settings.github_api,
                                               token=self.settings.github_token, policy=self.settings.policy)
        except release.PublisherUnavailable as exc:
            self.publisher_problem = exc.reason

    def warn_first_use(self, sha256: str) -> None:
        """Say (once per process) that this file is trusted on first use only: no pin, no publisher's digest."""
        if self.pin is None and (self.publisher is None or self.publisher.sha256 is None):
            by_url = self.asset_url if self.entry is None else None
            reason = self.publisher_problem or (
                f"its release lists its size but no digest ({self.publisher.source})" if self.publisher else None)
            warn_first_use(self.target.name, sha256, url=by_url, reason=reason)

    def validate(self, path: Path, name: str) -> dict[str, torch.Tensor]:
        """The tensors of ``path`` if it reads safely as a checkpoint and passes :attr:`check`."""
        state_dict = read_state_dict(path, source=name)
        if self.check is not None:
            self.check(state_dict, name)
        return state_dict

    def discard(self, path: Path | None, sha256: str) -> list[Path]:
        """Remove a file that failed a check (``path``; None: one kept elsewhere), the record of its digest, and the
        fast-reload copy made from it; return what was removed."""
        doomed = [path] if path is not None else []
        try:
            if read_record(self.target) == sha256:
                doomed.append(cache.record_path(self.target))
        except IntegrityError:  # a damaged record describes nothing: it goes too
            doomed.append(cache.record_path(self.target))
        copy = cache.safetensors_path(self.target.parent, self.entry) if self.entry is not None else None
        if copy is not None and copy.is_file() and _copied_from(copy) in (sha256, None):
            doomed.append(copy)
        return cache.remove(doomed)

    def check_content(self, path: Path, sha256: str, name: str, *, removable: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`validate`; on failure, :meth:`discard` the file (unless kept in another library's cache) and
        raise the same error saying what was removed."""
        try:
            return self.validate(path, name)
        except _CONTENT_ERRORS as exc:
            removed = self.discard(path if removable else None, sha256)
            said = f"Removed from the cache: {', '.join(map(str, removed))}. " if removed else ""
            kept = "" if removable else f"Left in the Hugging Face cache: {path} (remove it with `hf cache rm`). "
            raise type(exc)(f"{exc}\n{said}{kept}Nothing of it is trusted, so once its source is fixed, the same "
                            "call gets it again.") from None

    def accept(self, received: Received, source: str) -> FileDigest:
        """Check the bytes received from ``source`` and rename that very file into place (module docstring)."""
        expected = self.expected()
        problem = mismatch(received.sha256, received.size, expected)
        if problem is not None:
            cache.remove([received.path])
            if expected.first_use and expected.sha256:
                record = cache.record_path(self.target)
                problem += f"; if the published file really changed, delete the record {record} and download again"
            raise TransferError(problem + "; the downloaded file was deleted")
        self.state_dict = self.check_content(received.path, received.sha256, f"{self.target.name} from {source}")
        if self.target.exists() and not self.force:  # another process won the race: use its file once verified
            self.state_dict = None
            cache.remove([received.path])
            found = sha256_file(self.target)
            if found != received.sha256:
                raise TransferError(f"another process placed {self.target} meanwhile (sha256 {found}) while this one "
                                    f"received sha256 {received.sha256}: the source changed during the download")
        else:
            try:
                cache.place(received.path, self.target)
            except FileNotFoundError:
                raise TransferError(f"{received.path} was taken by another process (it judged it abandoned) before "
                                    "it could be placed") from None
        write_record(self.target, received.sha256)
        self.warn_first_use(received.sha256)
        return FileDigest(self.target, received.sha256, received.size)

    def accept_kept(self, path: Path, source: str) -> FileDigest:
        """Check a file that stays in another library's cache (Hugging Face's): it is never moved or deleted."""
        found, size = sha256_file(path), path.stat().st_size
        problem = mismatch(found, size, self.expected())
        if problem is not None:
            raise TransferError(f"{problem} for {path} in the Hugging Face cache (left there: delete it with "
                                "`hf cache rm` or huggingface_hub's scan_cache_dir)")
        self.state_dict = self.check_content(path, found, f"{path} from {source}", removable=False)
        write_record(self.target, found)
        self.warn_first_use(found)
        return FileDigest(path, found, size)


def _copied_from(copy: Path) -> str | None:
    """The digest of the checkpoint a safetensors copy records it was made from (None: unreadable or none)."""
    from safetensors import SafetensorError

    try:
        return read_model_metadata(copy).get("source_sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def _check_cached(job: Job, attempts: list[tuple[str, str]]) -> FileDigest | None:
    """The cached file if it verifies; otherwise remove it (and what came from it), note why, and return None."""
    expected = job.expected()
    if expected.sha256 is None:  # first sight of this file (placed by hand, by torch.hub, or before a crash)
        job.ask_publisher()
        expected = job.expected()
    found, size = sha256_file(job.target), job.target.stat().st_size
    problem = mismatch(found, size, expected)
    if problem is not None:
        removed = job.discard(job.target, found)
        attempts.append((f"cached file {job.target}",
                         f"failed verification ({problem}); removed {', '.join(map(str, removed))}"))
        return None
    if expected.sha256 is None:
        job.state_dict = job.check_content(job.target, found, f"cached file {job.target}")
    if read_record(job.target) != found:
        write_record(job.target, found)
    job.warn_first_use(found)
    return FileDigest(job.target, found, size)


def _read_only(job: Job, error: OSError) -> FileDigest:
    """A cache folder that cannot be written (a shared, pre-filled one): verify the file in place, change nothing."""
    why = f"the cache folder {job.target.parent} is not writable ({error.strerror or error})"
    name = job.target.name
    if job.force or not job.target.is_file():
        raise CheckpointNotAvailableError(
            f"cannot download {name}: {why}. Choose a writable cache folder (--cache-dir, "
            f"{environment.CACHE.name} or cache_dir=), or place {name} in it by hand.")
    found, size, expected = sha256_file(job.target), job.target.stat().st_size, job.expected()
    problem = mismatch(found, size, expected)
    if problem is not None:
        raise CheckpointNotAvailableError(f"cached file {job.target} failed verification ({problem}) and {why}, so "
                                          f"it was not deleted: delete or replace {job.target}")
    if expected.sha256 is None:
        job.state_dict = job.validate(job.target, f"cached file {job.target} (in a read-only cache folder)")
    job.warn_first_use(found)
    return FileDigest(job.target, found, size)


def obtain(job: Job, sources: Sequence[Source], *, hint: str) -> FileDigest:
    """The verified file for ``job``: the cached one, or the first that a source supplies and that passes every
    check (see the module docstring). ``hint`` says how to supply the file by hand, for the error.

    Raises:
        CheckpointNotAvailableError: no source supplied a verified file (each is listed with its reason), or
            the cache folder cannot be written.
        CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError: a source supplied a file that
            is not a safe checkpoint fitting the entry (it was removed).
    """
    def waiting() -> None:
        if job.progress:
            tqdm.write(f"waiting for another process to finish downloading {job.target.name} ...", file=sys.stderr)

    stack = ExitStack()
    try:
        stack.enter_context(cache.lock(job.target, on_wait=waiting))
    except OSError as exc:
        return _read_only(job, exc)
    with stack:
        attempts: list[tuple[str, str]] = []
        if not job.force and job.target.is_file():
            cached = _check_cached(job, attempts)
            if cached is not None:
                return cached
        job.ask_publisher()
        for source in sources:
            if job.settings.offline and not source.offline_ok:
                attempts.append((source.name, f"skipped: offline mode ({job.settings.offline_reason})"))
                continue
            try:
                return source.fetch(job)
            except TransferError as exc:
                attempts.append((source.name, exc.reason))
        what = job.target.name + (f" ({job.entry.title})" if job.entry is not None else "")
        offline = f" in offline mode ({job.settings.offline_reason})" if job.settings.offline else ""
        lines = [f"could not get {what}{offline}. Sources tried:", *(f"  - {s}: {r}" for s, r in attempts), hint]
        raise CheckpointNotAvailableError("\n".join(lines), attempts)
