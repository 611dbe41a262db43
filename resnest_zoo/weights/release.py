"""What the publisher says about a file: its size and sha256, from GitHub's release API.

For a URL ``https://github.com/{owner}/{repo}/releases/download/{tag}/{name}`` (the catalogue's), ``GET
{api}/repos/{owner}/{repo}/releases/tags/{tag}`` lists the release's assets with their ``size`` and, for assets GitHub
has hashed, a ``digest`` (``sha256:...``). The answer is read once and kept beside the file in the cache
(:func:`.cache.release_note_path`). The API base is ``$RESNEST_ZOO_GITHUB_API`` (GitHub Enterprise, tests);
``$GITHUB_TOKEN`` is sent when set, since unauthenticated calls are limited to 60 an hour.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from ..files import atomic_write
from . import cache
from .transfer import RetryPolicy, TransferError, get, http_session

__all__ = ["DEFAULT_API", "Published", "PublisherUnavailable", "cached", "published"]

DEFAULT_API = "https://api.github.com"
_ASSET_PATH = re.compile(r"/(?P<owner>[^/]+)/(?P<repo>[^/]+)/releases/download/(?P<tag>[^/]+)/(?P<name>[^/]+)")
_DIGEST = re.compile(r"sha256:(?P<hex>[0-9a-fA-F]{64})")


@dataclass(frozen=True)
class Published:
    """The publisher's word on one file: its size, and its sha256 when the publisher lists one."""

    size: int | None
    sha256: str | None
    source: str


class PublisherUnavailable(Exception):
    """The publisher's size and digest could not be read; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cached(asset_url: str, target: Path) -> Published | None:
    """The publisher's answer kept beside ``target``, if it was read for this very URL."""
    try:
        note = json.loads(cache.release_note_path(target).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(note, dict) or note.get("asset_url") != asset_url:
        return None
    return Published(note.get("size"), note.get("sha256"), f"GitHub release API, read {note.get('read', '?')}")


def published(asset_url: str, target: Path, *, api: str, token: str | None, policy: RetryPolicy) -> Published:
    """The size and digest the publisher lists for ``asset_url``, kept beside ``target`` once read.

    Raises :class:`PublisherUnavailable` when the URL is not a GitHub release asset, the API cannot be reached or
    refuses (rate limit, no such release), or the release does not list the file.
    """
    known = cached(asset_url, target)
    if known is not None:
        return known
    match = _ASSET_PATH.fullmatch(urlparse(asset_url).path)
    if match is None:
        raise PublisherUnavailable("its URL is not a GitHub release asset")
    url = f"{api.rstrip('/')}/repos/{match['owner']}/{match['repo']}/releases/tags/{match['tag']}"
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with http_session(policy) as session, get(session, url, policy, headers) as response:
            document = _answer(response)
    except TransferError as exc:
        document = exc.reason
    if isinstance(document, str):
        raise PublisherUnavailable(f"GitHub release API {url}: {document}")
    asset = next((a for a in document.get("assets") or [] if isinstance(a, dict) and a.get("name") == match["name"]),
                 None)
    if asset is None:
        raise PublisherUnavailable(f"the release at {url} lists no asset named {match['name']}")
    digest = _DIGEST.fullmatch(str(asset.get("digest")))
    size = asset.get("size") if isinstance(asset.get("size"), int) else None
    sha256 = digest["hex"].lower() if digest else None
    read = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with atomic_write(cache.release_note_path(target)) as temporary:
        temporary.write_text(json.dumps({"asset_url": asset_url, "api": url, "size": size, "sha256": sha256,
                                         "read": read}), encoding="utf-8")
    return Published(size, sha256, f"GitHub release API, read {read}")


def _answer(response: requests.Response) -> dict[str, Any] | str:
    """The API's JSON document, or why there is none."""
    status = response.status_code
    if status == 403 and response.headers.get("X-RateLimit-Remaining") == "0":
        return "rate limit exceeded (HTTP 403; unauthenticated calls are limited to 60 an hour: set GITHUB_TOKEN)"
    if status != 200:
        return {401: "GITHUB_TOKEN was refused (HTTP 401)", 404: "no such release (HTTP 404)"}.get(
            status, f"HTTP {status} {response.reason or ''}".rstrip())
    try:
        document = response.json()
    except ValueError:
        document = None
    return document if isinstance(document, dict) else "the answer is not a JSON object"
