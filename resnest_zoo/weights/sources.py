"""Where a checkpoint comes from, in which order, and the public ways to get one.

Sources, in order (the first that supplies a verified file wins; every failure is reported): ``weights=`` (a local
path, used in place, or an http(s) URL, then the only source); ``$RESNEST_ZOO_MIRROR`` (a base URL or a folder); the
entry's Hugging Face Hub repo, when the catalogue names one; the catalogue URL. :mod:`.obtain` checks and places the
file, :mod:`.transfer` moves its bytes.
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
from .integrity import FileDigest, normalise_sha256, sha256_file, verify
from .model_file import keep_fast_copy, read_fast_copy
from .obtain import Check, Expected, Source, Tensors, Wanted, expected, mismatch, obtain, warn_unpinned
from .saved import hub_file, hub_label, read_saved
from .settings import SourceSettings
from .transfer import Received, TransferError, copy_file, fetch_url

__all__ = ["Resolved", "resolve", "checkpoint_state_dict", "download_entry", "download_url", "entry_file", "is_url"]


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL (else a local path)."""
    return text.startswith(("http://", "https://"))


def _http(url: str, kind: str) -> Source:
    def fetch(wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool) -> Received:
        return fetch_url(url, wanted.target, policy=settings.policy, progress=progress, expected_size=known.size,
                         size_from=known.size_from)

    return Source(f"{kind} {url}", fetch)


def _folder(folder: Path) -> Source:
    def fetch(wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool) -> Received:
        if not (folder / wanted.target.name).is_file():
            raise TransferError(f"{wanted.target.name} is not in that folder")
        return copy_file(folder / wanted.target.name, wanted.target, progress=progress)

    return Source(f"mirror folder {folder}", fetch, offline_ok=True)


def _hub(repo: str) -> Source:
    """The entry's Hub repository (files stay in Hugging Face's cache): a saved-model folder as ``export --hub-folder``
    writes it, else the published file. A saved model is trusted through its ``config.json``, which must describe this
    entry with the digest the ``.pth`` must have as its source's (:func:`.saved.read_saved` checks its weights)."""
    def fetch(wanted: Wanted, known: Expected, settings: SourceSettings, progress: bool) -> Received:
        try:
            saved = read_saved(HUB_PREFIX + repo, settings=settings, progress=progress)
        except (PretrainedNotFoundError, CheckpointNotAvailableError) as exc:  # none there, or unreachable: perhaps
            try:                                                               # the published file is
                path = hub_file(repo, wanted.target.name, settings=settings, progress=progress)
            except TransferError as error:
                unreachable = isinstance(exc, CheckpointNotAvailableError)
                raise TransferError(f"{error.reason} (looked for {CONFIG_NAME} and {wanted.target.name})" if unreachable
                                    else f"{wanted.target.name}: {error.reason}") from None
            return Received(path, sha256_file(path), path.stat().st_size, kept=True)
        except ResNeStZooError as exc:  # a config.json or weights file that cannot be used
            raise TransferError(str(exc).splitlines()[0].removeprefix(f"{hub_label(repo)}: ")) from None
        origin = saved.record.origin
        if wanted.entry is None or origin is None or not saved.record.is_catalogue_model or origin.sha256 is None:
            raise TransferError(f"its config.json does not describe the published {wanted.target.name} with the digest "
                                "of the file it was made from, so nothing there can be checked against the catalogue")
        if known.sha256 is not None and origin.sha256 != known.sha256:
            raise TransferError(f"its config.json says its tensors were made from a file with sha256 {origin.sha256}, "
                                f"but {wanted.target.name} must have sha256 {known.sha256} ({known.digest_from})")
        return Received(saved.weights, origin.sha256, None, kept=True)

    return Source(f"Hugging Face Hub repo {repo}", fetch, offline_ok=True)


def entry_file(entry: CheckpointEntry, folder: Path, sha256: str | None = None, check: Check | None = None) -> Wanted:
    """The published file of ``entry`` in the cache ``folder``, pinned by the catalogue or by ``sha256``."""
    pin = normalise_sha256(sha256) if sha256 is not None else None
    if entry.sha256 is not None and pin not in (None, entry.sha256):
        raise IntegrityError(f"sha256={pin} differs from the catalogue's pin {entry.sha256} for {entry.filename}: no "
                             "file can match both. Drop sha256= to use the catalogue's file, or pass weights= to load "
                             "another file.")
    return Wanted(folder / entry.filename, entry.url, entry.sha256 or pin,
                  "the catalogue's pin" if entry.sha256 else "sha256=", entry.size, entry, check)


def _obtain(entry: CheckpointEntry, url: str | None, *, check: Check | None, sha256: str | None,
            cache_dir: str | os.PathLike[str] | None, progress: bool | None, settings: SourceSettings | None,
            force: bool = False) -> tuple[FileDigest, Tensors | None]:
    """The verified file of ``entry`` (``url`` None) or of an explicit ``weights=`` URL, and its tensors if read."""
    settings = settings if settings is not None else SourceSettings.from_env()
    folder = cache.resolve_cache_dir(cache_dir)
    if url is None:
        wanted = entry_file(entry, folder, sha256, check)
        sources = [_http(settings.mirror.rstrip("/") + "/" + entry.filename, "mirror") if is_url(settings.mirror)
                   else _folder(Path(settings.mirror).expanduser())] if settings.mirror else []
        sources += [*([_hub(entry.hf_repo)] if entry.hf_repo else []), _http(entry.url, "catalogue URL")]
        hint = (f"To supply the file by hand: download {entry.url} (browser, curl or wget, on any machine with network "
                f"access) and place it at {wanted.target} -- or set {environment.MIRROR.name} to a folder holding "
                f"{entry.filename}, or pass weights='/path/to/{entry.filename}'.")
    else:
        target = cache.url_download_path(folder, url)
        wanted = Wanted(target, url, normalise_sha256(sha256) if sha256 else None, entry=entry, check=check)
        sources = [_http(url, "weights URL")]
        hint = f"To supply the file by hand: download {url} yourself and pass weights='/path/to/{target.name}'."
    progress = interactive() if progress is None else progress
    return obtain(wanted, sources, settings, progress=progress, hint=hint, force=force)


def download_entry(entry: CheckpointEntry, *, check: Check | None, cache_dir: str | os.PathLike[str] | None = None,
                   progress: bool | None = None, sha256: str | None = None, force: bool = False,
                   settings: SourceSettings | None = None) -> FileDigest:
    """The verified file of a catalogue entry (downloaded if needed): its path, digest and size. ``check`` is what its
    tensors must pass before it is trusted (:data:`~resnest_zoo.weights.obtain.Check`)."""
    return _obtain(entry, None, check=check, sha256=sha256, cache_dir=cache_dir, progress=progress, settings=settings,
                   force=force)[0]


def download_url(url: str, *, check: Check | None, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool | None = None, sha256: str | None = None, force: bool = False,
                 settings: SourceSettings | None = None, entry: CheckpointEntry | None = None) -> FileDigest:
    """The verified file of an explicit ``weights=`` URL, downloaded into the cache if needed (against ``sha256``, else
    the publisher's digest or the record of its first download); it must read safely and pass ``check``."""
    return _obtain(entry, url, check=check, sha256=sha256, cache_dir=cache_dir, progress=progress,  # type: ignore
                   settings=settings, force=force)[0]


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
    """The weights file to use for ``entry``, the one place that reads ``weights=`` and ``sha256=``: None, the
    catalogue's file (:func:`download_entry`); an http(s) URL, that file (:func:`download_url`); a local path, the file
    in place, checked against ``sha256`` (:class:`~resnest_zoo.IntegrityError`) and hashed when ``digest``."""
    text = os.fspath(weights) if weights is not None else None
    if text is None or is_url(text):
        got, tensors = _obtain(entry, text, check=check, sha256=sha256, cache_dir=cache_dir, progress=progress,
                               settings=settings, force=force)
        return Resolved(got.path, got.sha256, str(got.path) if text is None else f"{text} (cached as {got.path})",
                        tensors)
    path = Path(text).expanduser()
    if not path.is_file():
        read_state_dict(path)  # the one message for a missing file or a folder
    if sha256 is None and not digest:
        return Resolved(path, None, str(path))
    found = verify(path)
    problem = mismatch(found.sha256, found.size, Expected(normalise_sha256(sha256) if sha256 else None, "sha256="))
    if problem is not None:
        raise IntegrityError(f"{path} failed verification: {problem}")
    return Resolved(path, found.sha256, str(path))


def checkpoint_state_dict(entry: CheckpointEntry, *, check: Check | None, weights: str | os.PathLike[str] | None = None,
                          sha256: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
                          progress: bool | None = None,
                          settings: SourceSettings | None = None) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """The model tensors for ``entry``, where they came from, and the sha256 of that file (None for a local file used
    as it is); ``weights`` and ``sha256`` are :func:`resolve`'s. The catalogue's file is read from its model-only copy
    when one made from it is cached (no re-hashing, no unpickling), else obtained, read, and copied for next time."""
    if weights is None:
        folder = cache.resolve_cache_dir(cache_dir)
        known = expected(entry_file(entry, folder, sha256))
        fast = read_fast_copy(folder, entry, known.sha256) if known.sha256 is not None else None
        if fast is not None:
            if known.unpinned:
                warn_unpinned(entry.filename, known.unpinned)
            return fast[0], f"{fast[1]} (model-only copy of {entry.filename}, sha256 {known.sha256})", known.sha256
    found = resolve(entry, check=check, weights=weights, sha256=sha256, cache_dir=cache_dir, progress=progress,
                    settings=settings)
    tensors = found.tensors()
    if weights is None:
        keep_fast_copy(tensors, folder, entry, found.sha256, source=found.path)  # type: ignore[arg-type]
    return tensors, found.description, found.sha256
