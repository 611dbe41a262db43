"""Getting a checkpoint: from the cache, a mirror, the Hugging Face Hub or the catalogue URL; verified.

Sources, in order (the first that supplies a verified file wins; every failure is reported):

1. ``weights=`` -- a local path (used in place) or an http(s) URL (then it is the only source);
2. ``$RESNEST_ZOO_MIRROR`` -- a base URL, or a local folder, holding the published file names;
3. the entry's Hugging Face Hub repo, when the catalogue names one (through ``huggingface_hub``: its cache,
   token and offline rules apply; the file stays in its cache);
4. the catalogue URL (the GitHub release asset).

A file is verified against a *pin* (the catalogue's sha256, and/or ``sha256=``) or, for entries not yet
pinned, against the *record* of its first complete download (see :mod:`resnest_zoo.integrity`). Downloads
are resumable, retried and locked per file across processes (:mod:`resnest_zoo.transfer`,
:mod:`resnest_zoo.cache`); a file is renamed to its final name only once verified, and a cached file that
fails verification is deleted before anything else happens.

When hashing happens: :func:`download` re-hashes the cached ``.pth`` on every call (about 1 s per GB), since
it hands out the path. :func:`checkpoint_state_dict` (used by ``load``) first looks for the model-only
safetensors copy made after the first verified load; that copy records the digest of the file it was made
from and is used only when that digest is the expected one, so reloads neither re-hash nor unpickle the
``.pth``. The ``.pth`` is re-hashed whenever it is read again.

``RESNEST_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) skips every network source; a file that is not cached
then raises :class:`CheckpointNotAvailableError` naming the file and the folder to place it in. A cache folder
that cannot be written (a shared, pre-filled one) is used as it is: files are verified in place.

Environment: ``RESNEST_ZOO_CACHE`` (cache folder), ``RESNEST_ZOO_MIRROR``, ``RESNEST_ZOO_OFFLINE``,
``RESNEST_ZOO_RETRIES`` / ``RESNEST_ZOO_RETRY_DELAY`` / ``RESNEST_ZOO_TIMEOUT`` (see
:class:`~resnest_zoo.transfer.RetryPolicy`); the names are owned by :mod:`resnest_zoo.environment`.
"""
from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from filelock import Timeout as LockTimeout
from tqdm.auto import tqdm

from .cache import (
    cached_files,
    checkpoint_path,
    clear_cache,
    file_lock,
    partial_meta_path,
    partial_path,
    resolve_cache_dir,
    safetensors_path,
    url_download_path,
)
from .. import environment
from ..catalogue import CheckpointEntry, get_entry
from .checkpoint import read_state_dict
from ..errors import CheckpointNotAvailableError, IntegrityError
from .integrity import (
    FileDigest,
    check_digest,
    normalise_sha256,
    read_record,
    sha256_file,
    verify,
    warn_unpinned,
    write_record,
)
from .model_file import load_cached_model_file, write_model_file
from .transfer import RetryPolicy, TransferError, copy_file, fetch_url

__all__ = [
    "SourceSettings",
    "checkpoint_state_dict",
    "download",
    "download_entry",
    "download_url",
    "verify",
    "cached_files",
    "clear_cache",
]

@dataclass(frozen=True)
class SourceSettings:
    """Where files may come from and how hard to try; :meth:`from_env` reads the environment.

    ``hf_endpoint`` and ``hf_cache_dir`` default to huggingface_hub's own (``HF_ENDPOINT``, ``HF_HUB_CACHE``).
    """

    offline: bool = False
    mirror: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    hf_endpoint: str | None = None
    hf_cache_dir: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> SourceSettings:
        """Settings from ``RESNEST_ZOO_OFFLINE``/``HF_HUB_OFFLINE``, ``RESNEST_ZOO_MIRROR`` and the retry
        variables of :class:`~resnest_zoo.transfer.RetryPolicy`, then ``overrides``."""
        values: dict[str, object] = {
            "offline": environment.flag(environment.OFFLINE) or environment.flag(environment.HF_OFFLINE),
            "mirror": environment.text(environment.MIRROR),
            "policy": RetryPolicy.from_env(),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def offline_reason(self) -> str:
        for variable in (environment.OFFLINE, environment.HF_OFFLINE):
            if environment.flag(variable):
                return f"{variable.name}={os.environ[variable.name]}"
        return "offline=True"


def default_progress() -> bool:
    """Progress bars by default only in a terminal or a notebook."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


# ----------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class _Attempt:
    source: str
    reason: str


class _Source:
    """A place to get the file from; :meth:`fetch` returns the verified local file or raises TransferError."""

    name: str
    offline_ok: bool  # can answer without the network (a local folder, the Hugging Face cache)

    def fetch(self, job: _Job) -> FileDigest:
        raise NotImplementedError


@dataclass
class _Job:
    """One file to obtain: where it goes, what it must hash to, and how to show progress."""

    target: Path
    pin: str | None
    size: int | None
    settings: SourceSettings
    progress: bool
    label: str
    entry: CheckpointEntry | None = None
    url: str | None = None  # for weights= URLs (no catalogue entry)

    def warn_unpinned(self, sha256: str) -> None:
        if self.pin is None:
            warn_unpinned(self.target.name, sha256, url=self.url)

    @property
    def expected(self) -> str | None:
        """The digest the file must have: the pin, else the record of the first download (if any)."""
        return self.pin if self.pin is not None else read_record(self.target)

    def accept(self, partial: Path, sha256: str, size: int) -> FileDigest:
        """Verify a complete partial file; rename it into place, or delete it and raise TransferError."""
        expected = self.expected
        problem = None
        if self.size is not None and size != self.size:
            problem = f"size mismatch: expected {self.size} bytes, found {size}"
        elif expected is not None and sha256 != expected:
            problem = f"digest mismatch: sha256 expected {expected}, found {sha256} ({size} bytes)"
        if problem is not None:
            partial.unlink(missing_ok=True)
            partial_meta_path(self.target).unlink(missing_ok=True)
            if self.pin is None:
                problem += (f"; the expected digest is the record of the first download ({self.target.name}.sha256): "
                            "if the published file really changed, clear the cache entry and download again")
            raise TransferError(problem + "; the downloaded file was deleted")
        write_record(self.target, sha256)
        os.replace(partial, self.target)
        partial_meta_path(self.target).unlink(missing_ok=True)
        return FileDigest(self.target, sha256, size)


@dataclass(frozen=True)
class _HttpSource(_Source):
    url: str
    kind: str
    offline_ok: bool = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.kind} {self.url}"

    def fetch(self, job: _Job) -> FileDigest:
        partial, meta = partial_path(job.target), partial_meta_path(job.target)
        for _ in range(2):
            received = fetch_url(self.url, partial, meta, policy=job.settings.policy, progress=job.progress,
                                 label=job.label, expected_size=job.size)
            try:
                return job.accept(partial, received.sha256, received.size)
            except TransferError:
                if not received.resumed:
                    raise
                # the first bytes came from an earlier, interrupted download: try once more from scratch
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _FolderSource(_Source):
    folder: Path
    offline_ok: bool = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"mirror folder {self.folder}"

    def fetch(self, job: _Job) -> FileDigest:
        source = self.folder / job.target.name
        if not source.is_file():
            raise TransferError(f"{job.target.name} is not in that folder")
        partial = partial_path(job.target)
        partial_meta_path(job.target).unlink(missing_ok=True)
        received = copy_file(source, partial, progress=job.progress, label=job.label)
        return job.accept(partial, received.sha256, received.size)


@dataclass(frozen=True)
class _HubSource(_Source):
    repo: str
    offline_ok: bool = True  # offline, it answers from the Hugging Face cache only (local_files_only)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"Hugging Face Hub repo {self.repo}"

    def fetch(self, job: _Job) -> FileDigest:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        settings = job.settings
        options: dict[str, object] = {"cache_dir": settings.hf_cache_dir, "endpoint": settings.hf_endpoint,
                                      "local_files_only": settings.offline}
        if not job.progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # huggingface_hub>=0.25
            options["tqdm_class"] = _SilentTqdm
        try:
            path = Path(hf_hub_download(self.repo, job.target.name, **options))  # type: ignore[arg-type]
        except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            if settings.offline:
                raise TransferError(f"not in the Hugging Face cache ({settings.offline_reason})") from None
            raise TransferError(f"{type(exc).__name__}: {detail}") from None
        found = sha256_file(path)
        expected = job.expected
        size = path.stat().st_size
        if expected is not None and found != expected:
            raise TransferError(
                f"digest mismatch: sha256 expected {expected}, found {found} ({size} bytes) for {path} in the Hugging "
                "Face cache (left there: delete it with `hf cache rm` or huggingface_hub's scan_cache_dir)"
            )
        job.target.parent.mkdir(parents=True, exist_ok=True)
        write_record(job.target, found)
        return FileDigest(path, found, size)


class _SilentTqdm(tqdm):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _mirror_source(mirror: str, filename: str) -> _Source:
    if is_url(mirror):
        return _HttpSource(url=mirror.rstrip("/") + "/" + filename, kind="mirror")
    if mirror.startswith("file://"):
        return _FolderSource(folder=Path(unquote(urlparse(mirror).path)))
    return _FolderSource(folder=Path(mirror).expanduser())


def _entry_sources(entry: CheckpointEntry, settings: SourceSettings) -> list[_Source]:
    sources: list[_Source] = []
    if settings.mirror:
        sources.append(_mirror_source(settings.mirror, entry.filename))
    if entry.hf_repo:
        sources.append(_HubSource(repo=entry.hf_repo))
    sources.append(_HttpSource(url=entry.url, kind="catalogue URL"))
    return sources


# ------------------------------------------------------------------------------------------------ obtain

def _obtain(job: _Job, sources: Sequence[_Source], *, force: bool, manual_hint: str) -> FileDigest:
    """The verified file for ``job``: the cached one, or the first source that supplies it (under the lock)."""
    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(job.target)
        try:
            lock.acquire(timeout=0)
        except LockTimeout:
            if job.progress:
                tqdm.write(f"waiting for another process to finish downloading {job.target.name} ...", file=sys.stderr)
            lock.acquire()
    except OSError as exc:  # LockTimeout is not an OSError
        if force or not job.target.is_file():
            raise
        return _check_read_only(job, exc)
    try:
        attempts: list[_Attempt] = []
        if not force and job.target.is_file():
            cached = _check_cached(job, attempts)
            if cached is not None:
                return cached
        for source in sources:
            if job.settings.offline and not source.offline_ok:
                attempts.append(_Attempt(source.name, f"skipped: offline mode ({job.settings.offline_reason})"))
                continue
            try:
                got = source.fetch(job)
            except TransferError as exc:
                attempts.append(_Attempt(source.name, exc.reason))
                continue
            job.warn_unpinned(got.sha256)
            return got
        raise _not_available(job, attempts, manual_hint)
    finally:
        lock.release()


def _check_cached(job: _Job, attempts: list[_Attempt]) -> FileDigest | None:
    """The cached file if it verifies; otherwise delete it, note why, and return None."""
    found = sha256_file(job.target)
    size = job.target.stat().st_size
    expected = job.expected
    if expected is None:  # placed by hand or by torch.hub: its digest becomes the record
        write_record(job.target, found)
        job.warn_unpinned(found)
        return FileDigest(job.target, found, size)
    if found == expected and (job.size is None or size == job.size):
        job.warn_unpinned(found)
        if job.pin is not None and read_record(job.target) != found:
            write_record(job.target, found)
        return FileDigest(job.target, found, size)
    job.target.unlink()
    attempts.append(_Attempt(
        f"cached file {job.target}",
        f"failed verification (sha256 expected {expected}, found {found}, {size} bytes): deleted",
    ))
    return None


def _check_read_only(job: _Job, error: OSError) -> FileDigest:
    """A cache folder we cannot write to (a shared, pre-filled one): verify the file in place, change nothing."""
    found = sha256_file(job.target)
    size = job.target.stat().st_size
    expected = job.expected
    if expected is None or (found == expected and (job.size is None or size == job.size)):
        job.warn_unpinned(found)
        return FileDigest(job.target, found, size)
    raise _not_available(job, [_Attempt(
        f"cached file {job.target}",
        f"failed verification (sha256 expected {expected}, found {found}, {size} bytes) and the cache folder is "
        f"not writable ({error}), so it was not deleted: delete or replace it",
    )], _entry_hint(job.entry, job.target.parent) if job.entry is not None else "")


def _not_available(job: _Job, attempts: list[_Attempt], manual_hint: str) -> CheckpointNotAvailableError:
    what = f"{job.target.name}" + (f" ({job.entry.title})" if job.entry is not None else "")
    offline = f" in offline mode ({job.settings.offline_reason})" if job.settings.offline else ""
    lines = [f"could not get {what}{offline}. Sources tried:"]
    lines += [f"  - {a.source}: {a.reason}" for a in attempts]
    lines.append(manual_hint)
    error = CheckpointNotAvailableError("\n".join(lines))
    error.attempts = [(a.source, a.reason) for a in attempts]  # type: ignore[attr-defined]
    return error


def _entry_job(entry: CheckpointEntry, folder: Path, sha256: str | None, settings: SourceSettings,
               progress: bool) -> _Job:
    pins = {p for p in (entry.sha256, sha256) if p is not None}
    if len(pins) > 1:
        raise IntegrityError(
            f"sha256={sha256} differs from the catalogue's pin {entry.sha256} for {entry.filename}: no file can match "
            "both. Drop sha256= to use the catalogue's file, or pass weights= to load another file."
        )
    return _Job(target=checkpoint_path(folder, entry), pin=pins.pop() if pins else None, size=entry.size,
                settings=settings, progress=progress, label=entry.filename, entry=entry)


def _entry_hint(entry: CheckpointEntry, folder: Path) -> str:
    return (
        f"To supply the file by hand: download {entry.url} (browser, curl or wget, on any machine with network "
        f"access) and place it at {folder / entry.filename} -- or set {environment.MIRROR.name} to a folder holding "
        f"{entry.filename}, or pass weights='/path/to/{entry.filename}'."
    )


def download_entry(
    entry: CheckpointEntry,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
    settings: SourceSettings | None = None,
) -> FileDigest:
    """:func:`download` for a catalogue entry object (e.g. one changed with :func:`dataclasses.replace`);
    returns the verified file's path, digest and size."""
    settings = settings if settings is not None else SourceSettings.from_env()
    progress = default_progress() if progress is None else progress
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    folder = resolve_cache_dir(cache_dir)
    job = _entry_job(entry, folder, sha256, settings, progress)
    return _obtain(job, _entry_sources(entry, settings), force=force, manual_hint=_entry_hint(entry, folder))


def download(
    segmentor: str,
    dataset: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """The local path of a catalogue checkpoint, downloaded and verified if needed.

    Args:
        segmentor, dataset: the catalogue entry (``"deeplabv3plus", "cityscapes"``; aliases work).
        cache_dir: cache folder (default ``$RESNEST_ZOO_CACHE``, else ``torch.hub.get_dir()/checkpoints``).
        progress: progress bar (default: in a terminal or notebook).
        sha256: digest the file must have, checked in addition to the catalogue's pin.
        force: fetch the file again even if a verified copy is cached (it replaces the copy once verified).

    Raises:
        CheckpointNotAvailableError: no source supplied a verified file; the message lists each source tried
            with the reason and says how to supply the file by hand.
    """
    entry = get_entry(segmentor, dataset)
    return download_entry(entry, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force).path


def download_url(
    url: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
    settings: SourceSettings | None = None,
) -> FileDigest:
    """Download an explicit ``weights=`` URL into the cache (``resnest_zoo-urls/<hash>/<name>``), verified
    against ``sha256`` or, without it, against the record of its first download."""
    settings = settings if settings is not None else SourceSettings.from_env()
    progress = default_progress() if progress is None else progress
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    folder = resolve_cache_dir(cache_dir)
    target = url_download_path(folder, url)
    job = _Job(target=target, pin=sha256, size=None, settings=settings, progress=progress, label=target.name, url=url)
    hint = f"To supply the file by hand: download {url} yourself and pass weights='/path/to/{target.name}'."
    return _obtain(job, [_HttpSource(url=url, kind="weights URL")], force=force, manual_hint=hint)


# --------------------------------------------------------------------------------------------- state dicts

def checkpoint_state_dict(
    entry: CheckpointEntry,
    *,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    settings: SourceSettings | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """The model tensors for ``entry`` and a description of where they came from.

    ``weights`` (a path or URL) replaces the catalogue file; ``sha256`` is checked against whichever file is
    used. Catalogue files are read from the model-only safetensors copy when a valid one is cached, else
    obtained with :func:`download_entry`, read with ``torch.load(weights_only=True)``, and copied to
    safetensors for the next time.
    """
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    if weights is not None:
        text = os.fspath(weights)
        if is_url(text):
            got = download_url(text, cache_dir=cache_dir, progress=progress, sha256=sha256, settings=settings)
            return read_state_dict(got.path), f"{text} (cached as {got.path})"
        path = Path(text)
        if sha256 is not None and path.is_file():
            check_digest(path, sha256, what="sha256=")
        return read_state_dict(path), str(path)

    folder = resolve_cache_dir(cache_dir)
    job = _entry_job(entry, folder, sha256, SourceSettings() if settings is None else settings, False)
    fast_copy = safetensors_path(folder, entry)
    expected = job.expected
    if expected is not None:
        state_dict = load_cached_model_file(fast_copy, expected)
        if state_dict is not None:
            job.warn_unpinned(expected)
            return state_dict, f"{fast_copy} (model-only copy of {entry.filename}, sha256 {expected})"
    got = download_entry(entry, cache_dir=folder, progress=progress, sha256=sha256, settings=settings)
    state_dict = read_state_dict(got.path)
    try:
        write_model_file(state_dict, fast_copy, entry=entry, source_sha256=got.sha256)
    except OSError as exc:  # a read-only or full cache folder: loading still works, only slower next time
        warnings.warn(f"could not write the fast-reload copy {fast_copy} ({exc}); the next load will read "
                      f"{got.path} again", RuntimeWarning, stacklevel=3)
    return state_dict, str(got.path)
