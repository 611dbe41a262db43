"""Where a checkpoint comes from, in which order, and the public ways to get one.

Sources, in order (the first that supplies a verified file wins; every failure is reported):

1. ``weights=`` -- a local path (used in place) or an http(s) URL (then it is the only source);
2. ``$RESNEST_ZOO_MIRROR`` -- a base URL, or a local folder, holding the published file names;
3. the entry's Hugging Face Hub repo, when the catalogue names one (through ``huggingface_hub``: its cache,
   token and offline rules apply; the file stays in its cache): a saved-model folder as ``resnest-zoo export
   --hub-folder`` writes it, checked through its ``config.json`` (see :class:`_HubSource`), or else the
   published file under its own name;
4. the catalogue URL (the GitHub release asset).

Whatever the source, the file is checked and placed by :mod:`.obtain` (digests, structure, the lock), its bytes
are moved by :mod:`.transfer`, and the model-only safetensors copy that makes later loads fast is used and kept
by the policy of :mod:`.model_file`. :func:`download` re-hashes the cached ``.pth`` on every call (about 1 s per
GB), since it hands out the path; :func:`checkpoint_state_dict` (used by ``load``) reads the safetensors copy
when it was made from the file the entry must have, so reloads neither re-hash nor unpickle the ``.pth``.

``RESNEST_ZOO_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) skips every network source, and the publisher's API; a file
that is not cached then raises :class:`CheckpointNotAvailableError` naming the file and the folder to place it
in. Environment variables are owned by :mod:`resnest_zoo.environment`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from .. import environment
from ..catalogue import CheckpointEntry
from ..errors import (
    CheckpointFormatError,
    CheckpointNotAvailableError,
    IntegrityError,
    PretrainedNotFoundError,
    ResNeStZooError,
)
from ..formats.saved_model import CONFIG_NAME
from ..progress import interactive
from . import cache
from .cache import resolve_cache_dir
from .checkpoint import read_state_dict
from .integrity import FileDigest, check_digest, normalise_sha256, sha256_file, verify, write_record
from .model_file import keep_fast_copy, read_fast_copy
from .obtain import Check, Job, Source, obtain
from ..naming import HUB_PREFIX
from .saved import hub_file, hub_label, read_saved
from .settings import SourceSettings
from .transfer import TransferError, copy_file, fetch_url

__all__ = [
    "Resolved",
    "resolve",
    "checkpoint_state_dict",
    "download_entry",
    "download_url",
    "is_url",
]


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


# ----------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class _HttpSource:
    url: str
    kind: str
    offline_ok: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind} {self.url}"

    def fetch(self, job: Job) -> FileDigest:
        for _ in range(2):
            expected = job.expected()
            received = fetch_url(self.url, job.target, policy=job.settings.policy, progress=job.progress,
                                 label=job.label, expected_size=expected.size, size_from=expected.size_from)
            try:
                return job.accept(received, self.name)
            except (TransferError, CheckpointFormatError):
                if not received.resumed:
                    raise
                # the first bytes came from an earlier, interrupted download (removed now): once more from scratch
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _FolderSource:
    folder: Path
    offline_ok: bool = True

    @property
    def name(self) -> str:
        return f"mirror folder {self.folder}"

    def fetch(self, job: Job) -> FileDigest:
        source = self.folder / job.target.name
        if not source.is_file():
            raise TransferError(f"{job.target.name} is not in that folder")
        received = copy_file(source, job.target, progress=job.progress, label=job.label)
        return job.accept(received, self.name)


@dataclass(frozen=True)
class _HubSource:
    """The entry's Hub repository: a saved-model folder (``config.json`` and ``model.safetensors``, as ``resnest-zoo
    export --hub-folder`` writes them) when it holds one, else the published file under its own name.

    A saved-model folder is trusted through its ``config.json``: it must describe this entry as published, the
    digest it records for the ``.pth`` its tensors were made from must be the one the file must have (the pin, the
    publisher's digest or the record of a first download), ``model.safetensors`` must have the digest it records,
    and its tensors must fit the entry. What is handed on is that file (it stays in the Hugging Face cache) with
    the ``.pth``'s digest, which pins, records and the fast-reload copy are about.
    """

    repo: str
    offline_ok: bool = True  # offline, it answers from the Hugging Face cache only (local_files_only)

    @property
    def name(self) -> str:
        return f"Hugging Face Hub repo {self.repo}"

    def fetch(self, job: Job) -> FileDigest:
        try:
            saved = read_saved(HUB_PREFIX + self.repo, settings=job.settings, progress=job.progress)
        except PretrainedNotFoundError:  # no saved-model folder there: the published file under its own name
            return self._published(job, looked_for_saved=False)
        except CheckpointNotAvailableError:  # not reachable (or not cached): perhaps the published file is
            return self._published(job, looked_for_saved=True)
        except ResNeStZooError as exc:  # a config.json or weights file that cannot be used
            raise TransferError(str(exc).splitlines()[0].removeprefix(f"{hub_label(self.repo)}: ")) from None
        origin = saved.record.origin
        if job.entry is None or origin is None or not saved.record.is_catalogue_model or origin.sha256 is None:
            raise TransferError(f"its config.json does not describe the published {job.label} with the digest of the "
                                "file it was made from, so nothing there can be checked against the catalogue")
        expected = job.expected()
        if expected.sha256 is not None and origin.sha256 != expected.sha256:
            raise TransferError(f"its config.json says its tensors were made from a file with sha256 {origin.sha256}, "
                                f"but {job.label} must have sha256 {expected.sha256} ({expected.digest_from})")
        job.state_dict = job.check_content(saved.weights, origin.sha256, f"{saved.weights} from {self.name}",
                                           removable=False)
        write_record(job.target, origin.sha256)
        job.warn_first_use(origin.sha256)
        return FileDigest(saved.weights, origin.sha256, saved.weights.stat().st_size)

    def _published(self, job: Job, *, looked_for_saved: bool) -> FileDigest:
        try:
            published = hub_file(self.repo, job.target.name, settings=job.settings, progress=job.progress)
        except TransferError as exc:
            if looked_for_saved:
                raise TransferError(f"{exc.reason} (looked for {CONFIG_NAME} and {job.target.name})") from None
            raise TransferError(f"{job.target.name}: {exc.reason}") from None
        return job.accept_kept(published, self.name)


def _mirror_source(mirror: str, filename: str) -> Source:
    if is_url(mirror):
        return _HttpSource(url=mirror.rstrip("/") + "/" + filename, kind="mirror")
    if mirror.startswith("file://"):
        return _FolderSource(folder=Path(unquote(urlparse(mirror).path)))
    return _FolderSource(folder=Path(mirror).expanduser())


def _entry_sources(entry: CheckpointEntry, settings: SourceSettings) -> list[Source]:
    sources: list[Source] = []
    if settings.mirror:
        sources.append(_mirror_source(settings.mirror, entry.filename))
    if entry.hf_repo:
        sources.append(_HubSource(repo=entry.hf_repo))
    sources.append(_HttpSource(url=entry.url, kind="catalogue URL"))
    return sources


# ------------------------------------------------------------------------------------------------ jobs

def _entry_job(entry: CheckpointEntry, folder: Path, sha256: str | None, settings: SourceSettings,
               progress: bool, check: Check | None, force: bool = False) -> Job:
    pins = {p for p in (entry.sha256, sha256) if p is not None}
    if len(pins) > 1:
        raise IntegrityError(
            f"sha256={sha256} differs from the catalogue's pin {entry.sha256} for {entry.filename}: no file can match "
            "both. Drop sha256= to use the catalogue's file, or pass weights= to load another file."
        )
    return Job(target=cache.checkpoint_path(folder, entry), settings=settings, progress=progress, label=entry.filename,
               asset_url=entry.url, pin=pins.pop() if pins else None,
               pin_from="the catalogue's pin" if entry.sha256 else "sha256=", size=entry.size, entry=entry,
               check=check, force=force)


def _entry_hint(entry: CheckpointEntry, folder: Path) -> str:
    return (
        f"To supply the file by hand: download {entry.url} (browser, curl or wget, on any machine with network "
        f"access) and place it at {folder / entry.filename} -- or set {environment.MIRROR.name} to a folder holding "
        f"{entry.filename}, or pass weights='/path/to/{entry.filename}'."
    )


def _options(settings: SourceSettings | None, progress: bool | None, sha256: str | None,
             cache_dir: str | os.PathLike[str] | None) -> tuple[SourceSettings, bool, str | None, Path]:
    return (settings if settings is not None else SourceSettings.from_env(),
            interactive() if progress is None else progress,
            normalise_sha256(sha256) if sha256 is not None else None,
            resolve_cache_dir(cache_dir))


def _obtain_entry(entry: CheckpointEntry, *, check: Check | None, cache_dir: str | os.PathLike[str] | None,
                  progress: bool | None, sha256: str | None, force: bool,
                  settings: SourceSettings | None) -> tuple[FileDigest, Job]:
    settings, progress, sha256, folder = _options(settings, progress, sha256, cache_dir)
    job = _entry_job(entry, folder, sha256, settings, progress, check, force)
    return obtain(job, _entry_sources(entry, settings), hint=_entry_hint(entry, folder)), job


def _obtain_url(url: str, *, check: Check | None, cache_dir: str | os.PathLike[str] | None, progress: bool | None,
                sha256: str | None, force: bool, settings: SourceSettings | None,
                entry: CheckpointEntry | None) -> tuple[FileDigest, Job]:
    settings, progress, sha256, folder = _options(settings, progress, sha256, cache_dir)
    target = cache.url_download_path(folder, url)
    job = Job(target=target, settings=settings, progress=progress, label=target.name, asset_url=url, pin=sha256,
              pin_from="sha256=", entry=entry, check=check, force=force)
    hint = f"To supply the file by hand: download {url} yourself and pass weights='/path/to/{target.name}'."
    return obtain(job, [_HttpSource(url=url, kind="weights URL")], hint=hint), job


def download_entry(
    entry: CheckpointEntry,
    *,
    check: Check | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
    settings: SourceSettings | None = None,
) -> FileDigest:
    """The verified file of a catalogue entry (downloaded if needed): its path, digest and size. ``check`` is what
    its tensors must pass before it is trusted (:data:`~resnest_zoo.weights.obtain.Check`)."""
    return _obtain_entry(entry, check=check, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force,
                         settings=settings)[0]


def download_url(
    url: str,
    *,
    check: Check | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    sha256: str | None = None,
    force: bool = False,
    settings: SourceSettings | None = None,
    entry: CheckpointEntry | None = None,
) -> FileDigest:
    """Download an explicit ``weights=`` URL into the cache (``resnest_zoo-urls/<hash>/<name>``), verified
    against ``sha256`` or, without it, against the publisher's digest (GitHub release assets) or the record
    of its first download. It must read safely as a checkpoint and pass ``check``."""
    return _obtain_url(url, check=check, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force,
                       settings=settings, entry=entry)[0]


# --------------------------------------------------------------------------------------------- resolving

@dataclass(frozen=True)
class Resolved:
    """A weights file ready to read: its path, its verified sha256 (None for a local file used as it is, without
    ``sha256=``), a description for messages, and its tensors when they were already read while checking it."""

    path: Path
    sha256: str | None
    description: str
    state_dict: dict[str, torch.Tensor] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The file's model tensors (read now unless they were read while checking it)."""
        return self.state_dict if self.state_dict is not None else read_state_dict(self.path, source=self.description)


def resolve(
    entry: CheckpointEntry,
    *,
    check: Check | None,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    settings: SourceSettings | None = None,
    force: bool = False,
    digest: bool = False,
) -> Resolved:
    """The weights file to use for ``entry``: the one place that reads ``weights=`` and ``sha256=``.

    ``weights`` None: the catalogue's file, obtained and verified (:func:`download_entry`); an http(s) URL: that
    file, downloaded and verified the same way (:func:`download_url`); a local path: the file in place, checked
    against ``sha256`` when given (:class:`~resnest_zoo.IntegrityError` otherwise) and hashed when ``digest``
    (to record where an export came from). ``check`` is what downloaded tensors must pass before they are trusted.
    """
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    options = dict(check=check, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force, settings=settings)
    if weights is None:
        got, job = _obtain_entry(entry, **options)  # type: ignore[arg-type]
        return Resolved(got.path, got.sha256, str(got.path), job.state_dict)
    text = os.fspath(weights)
    if is_url(text):
        got, job = _obtain_url(text, entry=entry, **options)  # type: ignore[arg-type]
        return Resolved(got.path, got.sha256, f"{text} (cached as {got.path})", job.state_dict)
    path = Path(text).expanduser()
    if not path.is_file():
        read_state_dict(path)  # the one message for a missing file or a folder
    if sha256 is None and not digest:
        return Resolved(path, None, str(path))
    found = verify(path)
    if sha256 is not None:
        check_digest(path, sha256, found=found.sha256, what="sha256=")
    return Resolved(path, found.sha256, str(path))


def checkpoint_state_dict(
    entry: CheckpointEntry,
    *,
    check: Check | None,
    weights: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    settings: SourceSettings | None = None,
) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """The model tensors for ``entry``, a description of where they came from, and the sha256 of that file (None
    for a local file used as it is).

    ``weights`` and ``sha256`` are :func:`resolve`'s. The catalogue's file is read from its model-only
    safetensors copy when a valid one is cached (no re-hashing, no unpickling), else obtained, read with
    ``torch.load(weights_only=True)``, and copied to safetensors for the next time.
    """
    if weights is None:
        folder = resolve_cache_dir(cache_dir)
        pin = normalise_sha256(sha256) if sha256 is not None else None
        job = _entry_job(entry, folder, pin, SourceSettings() if settings is None else settings, False, check)
        expected = job.expected().sha256
        fast = read_fast_copy(folder, entry, expected) if expected is not None else None
        if fast is not None:
            job.warn_first_use(expected)  # type: ignore[arg-type]
            return fast[0], f"{fast[1]} (model-only copy of {entry.filename}, sha256 {expected})", expected
    found = resolve(entry, check=check, weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress,
                    settings=settings)
    state_dict = found.tensors()
    if weights is None:
        keep_fast_copy(state_dict, resolve_cache_dir(cache_dir), entry, found.sha256, source=found.path)
    return state_dict, found.description, found.sha256
