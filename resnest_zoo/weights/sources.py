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

import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from tqdm.auto import tqdm

from .. import environment
from ..catalogue import CheckpointEntry, get_entry
from ..errors import CheckpointFormatError, IntegrityError
from . import cache
from .cache import cached_files, clear_cache, resolve_cache_dir
from .checkpoint import read_state_dict
from .integrity import FileDigest, check_digest, normalise_sha256, sha256_file, verify, write_record
from .model_file import keep_fast_copy, read_fast_copy
from .obtain import Job, Source, obtain
from .settings import SourceSettings
from .transfer import TransferError, copy_file, fetch_url

__all__ = [
    "SourceSettings",
    "checkpoint_state_dict",
    "expected_digest",
    "hub_file",
    "HubFileMissing",
    "download",
    "download_entry",
    "download_url",
    "verify",
    "cached_files",
    "clear_cache",
]


def default_progress() -> bool:
    """Progress bars by default only in a terminal or a notebook."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


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


class HubFileMissing(TransferError):
    """The Hub answered that the repository, the revision or the file does not exist (or is private)."""


def hub_file(repo_id: str, filename: str, *, settings: SourceSettings, revision: str | None = None,
             token: str | None = None, progress: bool = False) -> Path:
    """One file of a Hugging Face Hub repository, through huggingface_hub's cache (offline: from it alone).

    Raises :class:`HubFileMissing` when the Hub says there is no such file (HTTP 401/403/404, or its own
    not-found errors), and :class:`~resnest_zoo.weights.transfer.TransferError` when it cannot be asked (network,
    offline mode and not cached).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .. import __version__

    options: dict[str, object] = {"cache_dir": settings.hf_cache_dir, "endpoint": settings.hf_endpoint,
                                  "local_files_only": settings.offline, "revision": revision, "token": token,
                                  "library_name": "resnest_zoo", "library_version": __version__}
    if not progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:  # huggingface_hub>=0.25
        options["tqdm_class"] = _SilentTqdm
    try:
        return Path(hf_hub_download(repo_id, filename, **options))  # type: ignore[arg-type]
    except LocalEntryNotFoundError as exc:  # offline, unreachable, or a server without the Hub's error headers
        status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise HubFileMissing(f"HTTP {status}") from None
        if settings.offline:
            raise TransferError(f"not in the Hugging Face cache ({settings.offline_reason})") from None
        raise TransferError("the Hub cannot be reached, and the file is not in the Hugging Face cache") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise HubFileMissing(type(exc).__name__) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise TransferError(f"{type(exc).__name__}: {detail}") from None


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
        from ..hub.format import CONFIG_NAME

        try:
            config = hub_file(self.repo, CONFIG_NAME, settings=job.settings, progress=job.progress)
        except TransferError as first:  # no saved-model folder there (or none cached): the published file itself
            try:
                published = hub_file(self.repo, job.target.name, settings=job.settings, progress=job.progress)
            except TransferError as second:
                if isinstance(first, HubFileMissing):
                    raise TransferError(f"{job.target.name}: {second.reason}") from None
                raise TransferError(f"{second.reason} (looked for {CONFIG_NAME} and {job.target.name})") from None
            return job.accept_kept(published, self.name)
        return self._saved_model(job, config)

    def _saved_model(self, job: Job, config: Path) -> FileDigest:
        from ..errors import ConfigFormatError
        from ..hub.format import WEIGHTS_NAME, parse_record

        try:
            record = parse_record(config.read_text(encoding="utf-8"), "its config.json")
        except ConfigFormatError as exc:
            raise TransferError(str(exc)) from None
        origin = record.origin
        if job.entry is None or origin is None or not record.is_catalogue_model or origin.sha256 is None:
            raise TransferError(f"its config.json does not describe the published {job.label} with the digest of the "
                                "file it was made from, so nothing there can be checked against the catalogue")
        expected = job.expected()
        if expected.sha256 is not None and origin.sha256 != expected.sha256:
            raise TransferError(f"its config.json says its tensors were made from a file with sha256 {origin.sha256}, "
                                f"but {job.label} must have sha256 {expected.sha256} ({expected.digest_from})")
        weights = hub_file(self.repo, WEIGHTS_NAME, settings=job.settings, progress=job.progress)
        found = sha256_file(weights)
        if found != record.weights_sha256:
            raise TransferError(f"{WEIGHTS_NAME} has sha256 {found}, but its config.json records "
                                f"{record.weights_sha256} (left in the Hugging Face cache: delete it with `hf cache rm`)")
        job.state_dict = job.check_content(weights, origin.sha256, f"{weights} from {self.name}", removable=False)
        write_record(job.target, origin.sha256)
        job.warn_first_use(origin.sha256)
        return FileDigest(weights, origin.sha256, weights.stat().st_size)


class _SilentTqdm(tqdm):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


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
               progress: bool, force: bool = False) -> Job:
    pins = {p for p in (entry.sha256, sha256) if p is not None}
    if len(pins) > 1:
        raise IntegrityError(
            f"sha256={sha256} differs from the catalogue's pin {entry.sha256} for {entry.filename}: no file can match "
            "both. Drop sha256= to use the catalogue's file, or pass weights= to load another file."
        )
    return Job(target=cache.checkpoint_path(folder, entry), settings=settings, progress=progress, label=entry.filename,
               asset_url=entry.url, pin=pins.pop() if pins else None,
               pin_from="the catalogue's pin" if entry.sha256 else "sha256=", size=entry.size, entry=entry, force=force)


def _entry_hint(entry: CheckpointEntry, folder: Path) -> str:
    return (
        f"To supply the file by hand: download {entry.url} (browser, curl or wget, on any machine with network "
        f"access) and place it at {folder / entry.filename} -- or set {environment.MIRROR.name} to a folder holding "
        f"{entry.filename}, or pass weights='/path/to/{entry.filename}'."
    )


def _options(settings: SourceSettings | None, progress: bool | None, sha256: str | None,
             cache_dir: str | os.PathLike[str] | None) -> tuple[SourceSettings, bool, str | None, Path]:
    return (settings if settings is not None else SourceSettings.from_env(),
            default_progress() if progress is None else progress,
            normalise_sha256(sha256) if sha256 is not None else None,
            resolve_cache_dir(cache_dir))


def _obtain_entry(entry: CheckpointEntry, *, cache_dir: str | os.PathLike[str] | None, progress: bool | None,
                  sha256: str | None, force: bool, settings: SourceSettings | None) -> tuple[FileDigest, Job]:
    settings, progress, sha256, folder = _options(settings, progress, sha256, cache_dir)
    job = _entry_job(entry, folder, sha256, settings, progress, force)
    return obtain(job, _entry_sources(entry, settings), hint=_entry_hint(entry, folder)), job


def _obtain_url(url: str, *, cache_dir: str | os.PathLike[str] | None, progress: bool | None, sha256: str | None,
                force: bool, settings: SourceSettings | None,
                entry: CheckpointEntry | None) -> tuple[FileDigest, Job]:
    settings, progress, sha256, folder = _options(settings, progress, sha256, cache_dir)
    target = cache.url_download_path(folder, url)
    job = Job(target=target, settings=settings, progress=progress, label=target.name, asset_url=url, pin=sha256,
              pin_from="sha256=", entry=entry, force=force)
    hint = f"To supply the file by hand: download {url} yourself and pass weights='/path/to/{target.name}'."
    return obtain(job, [_HttpSource(url=url, kind="weights URL")], hint=hint), job


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
    return _obtain_entry(entry, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force,
                         settings=settings)[0]


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
        CheckpointFormatError, UnsafeCheckpointError, CheckpointMismatchError: a source supplied a file that
            is not a safe checkpoint of this entry; it was removed, and the message says what.
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
    entry: CheckpointEntry | None = None,
) -> FileDigest:
    """Download an explicit ``weights=`` URL into the cache (``resnest_zoo-urls/<hash>/<name>``), verified
    against ``sha256`` or, without it, against the publisher's digest (GitHub release assets) or the record
    of its first download. It must read safely as a checkpoint, and fit ``entry`` when one is given."""
    return _obtain_url(url, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force, settings=settings,
                       entry=entry)[0]


# --------------------------------------------------------------------------------------------- state dicts

def expected_digest(entry: CheckpointEntry, *, sha256: str | None = None,
                    cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The sha256 the entry's file must have -- the pin (or ``sha256=``), else the publisher's digest, else the
    record of its first download -- which is the digest of the file :func:`checkpoint_state_dict` read once it has
    returned; None while nothing is known (before the first download)."""
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    return _entry_job(entry, resolve_cache_dir(cache_dir), sha256, SourceSettings(), False).expected().sha256


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
    options = {"cache_dir": cache_dir, "progress": progress, "sha256": sha256, "force": False, "settings": settings}
    if weights is not None:
        text = os.fspath(weights)
        if is_url(text):
            got, job = _obtain_url(text, entry=entry, **options)  # type: ignore[arg-type]
            state_dict = job.state_dict if job.state_dict is not None else read_state_dict(got.path)
            return state_dict, f"{text} (cached as {got.path})"
        path = Path(text)
        if sha256 is not None and path.is_file():
            check_digest(path, sha256, what="sha256=")
        return read_state_dict(path), str(path)

    folder = resolve_cache_dir(cache_dir)
    job = _entry_job(entry, folder, sha256, SourceSettings() if settings is None else settings, False)
    expected = job.expected().sha256
    fast = read_fast_copy(folder, entry, expected) if expected is not None else None
    if fast is not None:
        job.warn_first_use(expected)  # type: ignore[arg-type]
        return fast[0], f"{fast[1]} (model-only copy of {entry.filename}, sha256 {expected})"
    got, job = _obtain_entry(entry, **options)  # type: ignore[arg-type]
    state_dict = job.state_dict if job.state_dict is not None else read_state_dict(got.path)
    keep_fast_copy(state_dict, folder, entry, got.sha256, source=got.path)
    return state_dict, str(got.path)
