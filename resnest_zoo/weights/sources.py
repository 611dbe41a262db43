"""Where a checkpoint comes from, in which order, and the public ways to get one.

Sources, in order (the first that supplies a verified file wins; every failure is reported):

1. ``weights=`` -- a local path (used in place) or an http(s) URL (then it is the only source);
2. ``$RESNEST_ZOO_MIRROR`` -- a base URL, or a local folder, holding the published file names;
3. the entry's Hugging Face Hub repo, when the catalogue names one (through ``huggingface_hub``: its cache, token and
   offline rules apply; the file stays in its cache): a saved-model folder as ``resnest-zoo export --hub-folder``
   writes it, checked through its ``config.json`` (see :class:`_HubSource`), or else the published file;
4. the catalogue URL (the GitHub release asset).

Whatever the source, the file is checked and placed by :mod:`.obtain`, and its bytes are moved by :mod:`.transfer`.
:func:`download_entry` re-hashes the cached ``.pth`` on every call (about 1 s per GB), since it hands out the path;
:func:`checkpoint_state_dict` (used by ``load``) reads the model-only safetensors copy (:mod:`.model_file`) when it was
made from the file the entry must have, so reloads neither re-hash nor unpickle the ``.pth``. Offline
(``RESNEST_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``), every network source and the publisher's API are skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import environment
from ..catalogue import CheckpointEntry
from ..errors import CheckpointNotAvailableError, IntegrityError, PretrainedNotFoundError, ResNeStZooError
from ..formats.saved_model import CONFIG_NAME
from ..naming import HUB_PREFIX
from ..progress import interactive
from . import cache
from .checkpoint import read_state_dict
from .integrity import Expected, FileDigest, check_digest, normalise_sha256, sha256_file, verify, warn_first_use
from .model_file import keep_fast_copy, read_fast_copy
from .obtain import Check, Obtained, Source, Wanted, expected, obtain
from .saved import hub_file, hub_label, read_saved
from .settings import SourceSettings
from .transfer import Received, TransferError, copy_file, fetch_url

__all__ = ["Resolved", "resolve", "checkpoint_state_dict", "download_entry", "download_url", "is_url"]


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (else a local path)."""
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

    def fetch(self, wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool,
              resume: bool) -> Received:
        return fetch_url(self.url, wanted.target, policy=settings.policy, progress=progress, label=wanted.label,
                         expected_size=known.size, size_from=known.size_from, resume=resume)


@dataclass(frozen=True)
class _FolderSource:
    folder: Path
    offline_ok: bool = True

    @property
    def name(self) -> str:
        return f"mirror folder {self.folder}"

    def fetch(self, wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool,
              resume: bool) -> Received:
        if not (self.folder / wanted.target.name).is_file():
            raise TransferError(f"{wanted.target.name} is not in that folder")
        return copy_file(self.folder / wanted.target.name, wanted.target, progress=progress, label=wanted.label)


@dataclass(frozen=True)
class _HubSource:
    """The entry's Hub repository: a saved-model folder (``config.json`` and ``model.safetensors``, as ``resnest-zoo
    export --hub-folder`` writes them) when it holds one, else the published file under its own name.

    A saved-model folder is trusted through its ``config.json``: it must describe this entry as published, the digest
    it records for the ``.pth`` its tensors were made from must be the one the file must have, ``model.safetensors``
    must have the digest it records (:func:`.saved.read_saved`), and its tensors must fit the entry. What is handed on
    is that file (it stays in the Hugging Face cache) with the ``.pth``'s digest, which pins, records and the
    fast-reload copy are about.
    """

    repo: str
    offline_ok: bool = True  # offline, it answers from the Hugging Face cache only

    @property
    def name(self) -> str:
        return f"Hugging Face Hub repo {self.repo}"

    def fetch(self, wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool,
              resume: bool) -> Received:
        try:
            saved = read_saved(HUB_PREFIX + self.repo, settings=settings, progress=progress)
        except (PretrainedNotFoundError, CheckpointNotAvailableError) as exc:  # no saved model there, or unreachable
            try:  # perhaps the published file is
                path = hub_file(self.repo, wanted.target.name, settings=settings, progress=progress)
            except TransferError as error:
                looked = f"looked for {CONFIG_NAME} and {wanted.target.name}"
                raise TransferError(f"{error.reason} ({looked})" if isinstance(exc, CheckpointNotAvailableError)
                                    else f"{wanted.target.name}: {error.reason}") from None
            return Received(path, sha256_file(path), path.stat().st_size, kept=True)
        except ResNeStZooError as exc:  # a config.json or weights file that cannot be used
            raise TransferError(str(exc).splitlines()[0].removeprefix(f"{hub_label(self.repo)}: ")) from None
        origin = saved.record.origin
        if wanted.entry is None or origin is None or not saved.record.is_catalogue_model or origin.sha256 is None:
            raise TransferError(f"its config.json does not describe the published {wanted.label} with the digest of "
                                "the file it was made from, so nothing there can be checked against the catalogue")
        if known.sha256 is not None and origin.sha256 != known.sha256:
            raise TransferError(f"its config.json says its tensors were made from a file with sha256 {origin.sha256}, "
                                f"but {wanted.label} must have sha256 {known.sha256} ({known.digest_from})")
        return Received(saved.weights, origin.sha256, None, kept=True)


def _entry_sources(entry: CheckpointEntry, settings: SourceSettings) -> list[Source]:
    sources: list[Source] = []
    if settings.mirror and is_url(settings.mirror):
        sources.append(_HttpSource(settings.mirror.rstrip("/") + "/" + entry.filename, "mirror"))
    elif settings.mirror:
        sources.append(_FolderSource(Path(settings.mirror).expanduser()))
    if entry.hf_repo:
        sources.append(_HubSource(entry.hf_repo))
    return [*sources, _HttpSource(entry.url, "catalogue URL")]


# ---------------------------------------------------------------------------------------------- obtaining

def _wanted(entry: CheckpointEntry, folder: Path, sha256: str | None, check: Check | None = None) -> Wanted:
    """The published file of ``entry`` in the cache ``folder``, pinned by the catalogue or by ``sha256``."""
    pin = normalise_sha256(sha256) if sha256 is not None else None
    if entry.sha256 is not None and pin not in (None, entry.sha256):
        raise IntegrityError(f"sha256={pin} differs from the catalogue's pin {entry.sha256} for {entry.filename}: no "
                             "file can match both. Drop sha256= to use the catalogue's file, or pass weights= to load "
                             "another file.")
    return Wanted(cache.checkpoint_path(folder, entry), entry.filename, entry.url, entry.sha256 or pin,
                  "the catalogue's pin" if entry.sha256 else "sha256=", entry.size, entry, check)


def _obtain_entry(entry: CheckpointEntry, *, check: Check | None, cache_dir: str | os.PathLike[str] | None,
                  progress: bool | None, sha256: str | None, force: bool, settings: SourceSettings | None) -> Obtained:
    settings = settings if settings is not None else SourceSettings.from_env()
    wanted = _wanted(entry, cache.resolve_cache_dir(cache_dir), sha256, check)
    hint = (f"To supply the file by hand: download {entry.url} (browser, curl or wget, on any machine with network "
            f"access) and place it at {wanted.target} -- or set {environment.MIRROR.name} to a folder holding "
            f"{entry.filename}, or pass weights='/path/to/{entry.filename}'.")
    progress = interactive() if progress is None else progress
    return obtain(wanted, _entry_sources(entry, settings), settings, progress=progress, hint=hint, force=force)


def _obtain_url(url: str, *, check: Check | None, cache_dir: str | os.PathLike[str] | None, progress: bool | None,
                sha256: str | None, force: bool, settings: SourceSettings | None,
                entry: CheckpointEntry | None) -> Obtained:
    settings = settings if settings is not None else SourceSettings.from_env()
    target = cache.url_download_path(cache.resolve_cache_dir(cache_dir), url)
    wanted = Wanted(target, target.name, url, normalise_sha256(sha256) if sha256 else None, entry=entry, check=check)
    hint = f"To supply the file by hand: download {url} yourself and pass weights='/path/to/{target.name}'."
    return obtain(wanted, [_HttpSource(url, "weights URL")], settings, progress=interactive() if progress is None
                  else progress, hint=hint, force=force)


def download_entry(entry: CheckpointEntry, *, check: Check | None, cache_dir: str | os.PathLike[str] | None = None,
                   progress: bool | None = None, sha256: str | None = None, force: bool = False,
                   settings: SourceSettings | None = None) -> FileDigest:
    """The verified file of a catalogue entry (downloaded if needed): its path, digest and size. ``check`` is what its
    tensors must pass before it is trusted (:data:`~resnest_zoo.weights.obtain.Check`)."""
    return _obtain_entry(entry, check=check, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force,
                         settings=settings)[0]


def download_url(url: str, *, check: Check | None, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool | None = None, sha256: str | None = None, force: bool = False,
                 settings: SourceSettings | None = None, entry: CheckpointEntry | None = None) -> FileDigest:
    """Download an explicit ``weights=`` URL into the cache (``resnest_zoo-urls/<hash>/<name>``), verified against
    ``sha256`` or, without it, against the publisher's digest (GitHub release assets) or the record of its first
    download. It must read safely as a checkpoint and pass ``check``."""
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


def resolve(entry: CheckpointEntry, *, check: Check | None, weights: str | os.PathLike[str] | None = None,
            sha256: str | None = None, cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None,
            settings: SourceSettings | None = None, force: bool = False, digest: bool = False) -> Resolved:
    """The weights file to use for ``entry``: the one place that reads ``weights=`` and ``sha256=``.

    ``weights`` None: the catalogue's file, obtained and verified (:func:`download_entry`); an http(s) URL: that file,
    downloaded and verified the same way (:func:`download_url`); a local path: the file in place, checked against
    ``sha256`` when given (:class:`~resnest_zoo.IntegrityError` otherwise) and hashed when ``digest`` (to record where
    an export came from). ``check`` is what downloaded tensors must pass before they are trusted.
    """
    sha256 = normalise_sha256(sha256) if sha256 is not None else None
    options = dict(check=check, cache_dir=cache_dir, progress=progress, sha256=sha256, force=force, settings=settings)
    if weights is None:
        got, tensors = _obtain_entry(entry, **options)  # type: ignore[arg-type]
        return Resolved(got.path, got.sha256, str(got.path), tensors)
    text = os.fspath(weights)
    if is_url(text):
        got, tensors = _obtain_url(text, entry=entry, **options)  # type: ignore[arg-type]
        return Resolved(got.path, got.sha256, f"{text} (cached as {got.path})", tensors)
    path = Path(text).expanduser()
    if not path.is_file():
        read_state_dict(path)  # the one message for a missing file or a folder
    if sha256 is None and not digest:
        return Resolved(path, None, str(path))
    found = verify(path)
    if sha256 is not None:
        check_digest(path, sha256, found=found.sha256, what="sha256=")
    return Resolved(path, found.sha256, str(path))


def checkpoint_state_dict(entry: CheckpointEntry, *, check: Check | None, weights: str | os.PathLike[str] | None = None,
                          sha256: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                          progress: bool | None = None,
                          settings: SourceSettings | None = None) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """The model tensors for ``entry``, a description of where they came from, and the sha256 of that file (None for
    a local file used as it is).

    ``weights`` and ``sha256`` are :func:`resolve`'s. The catalogue's file is read from its model-only safetensors
    copy when a valid one is cached (no re-hashing, no unpickling), else obtained, read with
    ``torch.load(weights_only=True)``, and copied to safetensors for the next time.
    """
    if weights is None:
        folder = cache.resolve_cache_dir(cache_dir)
        known = expected(_wanted(entry, folder, sha256))
        fast = read_fast_copy(folder, entry, known.sha256) if known.sha256 is not None else None
        if fast is not None:
            if known.unpinned:
                warn_first_use(entry.filename, known.unpinned)
            return fast[0], f"{fast[1]} (model-only copy of {entry.filename}, sha256 {known.sha256})", known.sha256
    found = resolve(entry, check=check, weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress,
                    settings=settings)
    tensors = found.tensors()
    if weights is None:
        keep_fast_copy(tensors, cache.resolve_cache_dir(cache_dir), entry, found.sha256,  # type: ignore[arg-type]
                       source=found.path)
    return tensors, found.description, found.sha256
