"""Reading a saved model (``config.json`` and ``model.safetensors``, :mod:`resnest_zoo.formats.saved_model`) from a
folder or a Hugging Face Hub repository, checked before anything trusts it. Repositories are read through
``huggingface_hub`` (its cache, token, ``HF_ENDPOINT`` and offline rules apply), ``config.json`` first, so that a
repository of something else is refused before its weights are downloaded."""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from .._version import __version__
from ..errors import CheckpointNotAvailableError, IntegrityError, PretrainedNotFoundError
from ..formats.saved_model import CONFIG_NAME, LIBRARY_NAME, WEIGHTS_NAME, SavedModel, parse_record
from ..naming import HUB_PREFIX
from ..progress import interactive, progress_bar
from .integrity import sha256_file
from .settings import SourceSettings
from .transfer import TransferError

__all__ = ["SavedFiles", "read_saved", "hub_file", "hub_label", "HubFileMissing"]

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class SavedFiles:
    """A saved model, checked: its ``config.json`` record, the path of its weights, and a name for messages."""

    record: SavedModel
    weights: Path
    label: str


class HubFileMissing(TransferError):
    """The Hub answered that the repository, the revision or the file does not exist (or is private)."""


def hub_file(repo_id: str, filename: str, *, settings: SourceSettings, revision: str | None = None,
             token: str | None = None, progress: bool = False) -> Path:
    """One file of a Hub repository through huggingface_hub's cache (offline: from that cache alone). Raises
    :class:`HubFileMissing` when the Hub says there is none, :class:`~.transfer.TransferError` when it cannot ask."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, token=token, cache_dir=settings.hf_cache_dir,
            endpoint=settings.hf_endpoint, local_files_only=settings.offline, library_name=LIBRARY_NAME,
            library_version=__version__, tqdm_class=partial(progress_bar, enabled=progress)))  # type: ignore[arg-type]
    except LocalEntryNotFoundError as exc:  # offline, unreachable, or a server without the Hub's error headers
        status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise HubFileMissing(f"HTTP {status}") from None
        if settings.offline:
            raise TransferError(f"not in the Hugging Face cache ({settings.offline_reason})") from None
        raise TransferError("the Hub cannot be reached, and the file is not in the Hugging Face cache") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:  # (after its subclass above)
        raise HubFileMissing(type(exc).__name__) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TransferError(f"{type(exc).__name__}: {detail}") from None


def hub_label(repo_id: str, revision: str | None = None) -> str:
    """How messages name a Hub repository (and revision)."""
    return f"Hub repository {repo_id}" + (f" (revision {revision})" if revision else "")


def read_saved(name_or_path: str | os.PathLike[str], *, revision: str | None = None,
               cache_dir: str | os.PathLike[str] | None = None, token: str | None = None,
               local_files_only: bool = False, settings: SourceSettings | None = None,
               progress: bool | None = None,
               check: Callable[[SavedModel, str], None] | None = None) -> SavedFiles:
    """The checked files of a saved model: a local folder, or a Hub repository ``org/name`` (``hf:org/name``: the Hub
    even where such a folder exists). ``check(record, where)`` may refuse the ``config.json`` before the weights are
    fetched. Raises :class:`~resnest_zoo.PretrainedNotFoundError` (nothing there),
    :class:`~resnest_zoo.ConfigFormatError` (a ``config.json`` not ours, newer, malformed),
    :class:`~resnest_zoo.IntegrityError` (weights whose digest is not the one recorded) and
    :class:`~resnest_zoo.CheckpointNotAvailableError` (Hub unreachable, files not cached)."""
    text = os.fspath(name_or_path)
    folder = Path(text).expanduser()
    if not text.startswith(HUB_PREFIX) and folder.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub repositories, but {text} is a local folder")
        for path in (folder / CONFIG_NAME, folder / WEIGHTS_NAME):
            if not path.is_file():
                found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
                raise PretrainedNotFoundError(
                    f"{folder} has no {path.name}: a saved model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
                    f"as save_pretrained() writes it (found: {found})")
        return _read(lambda name: folder / name, str(folder), str(folder / CONFIG_NAME), check)
    repo_id = text.removeprefix(HUB_PREFIX)
    if not _REPO_ID.fullmatch(repo_id):
        raise PretrainedNotFoundError(f"{text!r} is neither a folder nor a Hugging Face Hub repository name "
                                      "(org/name): give the folder save_pretrained() wrote, or the repository")
    settings = settings if settings is not None else SourceSettings.from_env()
    settings = replace(settings, offline=settings.offline or local_files_only,
                       hf_cache_dir=os.fspath(cache_dir) if cache_dir is not None else settings.hf_cache_dir)
    label = hub_label(repo_id, revision)
    progress = interactive() if progress is None else progress

    def fetch(filename: str) -> Path:
        try:
            return hub_file(repo_id, filename, settings=settings, revision=revision, token=token, progress=progress)
        except HubFileMissing as exc:
            missing = (f"{label} has no {filename} ({exc.reason}): it does not exist, is private (log in with `hf auth "
                       "login` or pass token=), or is not a model saved by resnest_zoo")
            raise PretrainedNotFoundError(missing if text.startswith(HUB_PREFIX) or filename != CONFIG_NAME
                                          else f"{missing}; and there is no folder {text}") from None
        except TransferError as exc:
            raise CheckpointNotAvailableError(f"could not get {filename} of {label}: {exc.reason}. Connect once to "
                                              "download it, or load a local folder.") from None

    return _read(fetch, label, f"{label}: {CONFIG_NAME}", check)


def _read(fetch: Callable[[str], Path], label: str, where: str,
          check: Callable[[SavedModel, str], None] | None) -> SavedFiles:
    """``config.json`` read and checked first, then the weights, which must have the digest it records."""
    record = parse_record(fetch(CONFIG_NAME).read_text(encoding="utf-8"), where)
    if check is not None:
        check(record, where)
    weights = fetch(WEIGHTS_NAME)
    found = sha256_file(weights)
    if found != record.weights_sha256:
        raise IntegrityError(f"{label}: {WEIGHTS_NAME} has sha256 {found}, but its {CONFIG_NAME} records "
                             f"{record.weights_sha256}: the two files do not belong together (a partial upload or a "
                             "hand-edited file). Save or download the model again.")
    return SavedFiles(record, weights, label)
