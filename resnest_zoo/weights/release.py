"""What the publisher says about a file: its size and sha256, from GitHub's release API.

For a URL of the form ``https://github.com/{owner}/{repo}/releases/download/{tag}/{name}`` (the catalogue's),
``GET {api}/repos/{owner}/{repo}/releases/tags/{tag}`` lists the release's assets with their ``size`` and,
for assets GitHub has hashed, a ``digest`` (``sha256:...``). The answer for the file is read once and kept
beside it in the cache (:func:`cache.release_note_path`), so later downloads of it need no API call.

The API base is ``$RESNEST_ZOO_GITHUB_API`` (GitHub Enterprise: ``https://HOST/api/v3``; tests: a local
server); ``$GITHUB_TOKEN`` is sent when set, since unauthenticated calls are limited to 60 an hour.
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

from . import cache
from .transfer import RetryPolicy, TransferError, get, http_session

__all__ = ["DEFAULT_API", "Published", "PublisherUnavailable", "asset_api_url", "cached", "published"]

DEFAULT_API = "https://api.github.com"
_ASSET_PATH = re.compile(r"/(?P<owner>[^/]+)/(?P<repo>[^/]+)/releases/download/(?P<tag>[^/]+)/(?P<name>[^/]+)")


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


def asset_api_url(asset_url: str, api: str) -> tuple[str, str] | None:
    """``(release API URL, asset name)`` for a GitHub release asset URL, or None for any other URL."""
    match = _ASSET_PATH.fullmatch(urlparse(asset_url).path)
    if match is None:
        return None
    return f"{api.rstrip('/')}/repos/{match['owner']}/{match['repo']}/releases/tags/{match['tag']}", match["name"]


def cached(asset_url: str, target: Path) -> Published | None:
    """The publisher's answer kept beside ``target``, if it was read for this very URL."""
    try:
        note = json.loads(cache.release_note_path(target).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(note, dict) or note.get("asset_url") != asset_url:
        return None
    return Published(size=note.get("size"), sha256=note.get("sha256"),
                     source=f"GitHub release API, read {note.get('read', '?')}")


def published(asset_url: str, target: Path, *, api: str, token: str | None, policy: RetryPolicy) -> Published:
    """The size and digest the publisher lists for ``asset_url`` (kept beside ``target`` once read).

    Raises :class:`PublisherUnavailable` when the URL is not a GitHub release asset, the API cannot be
    reached or refuses (rate limit, no such release), or the release does not list the file.
    """
    known = cached(asset_url, target)
    if known is not None:
        return known
    located = asset_api_url(asset_url, api)
    if located is None:
        raise PublisherUnavailable("its URL is not a GitHub release asset")
    url, name = located
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with http_session(policy) as session, get(session, url, policy, headers) as response:
            document = _answer(response, url)
    except TransferError as exc:
        raise PublisherUnavailable(f"GitHub release API {url}: {exc.reason}") from None
    asset = next((a for a in document.get("assets") or [] if isinstance(a, dict) and a.get("name") == name), None)
    if asset is None:
        raise PublisherUnavailable(f"the release at {url} lists no asset named {name}")
    size = asset.get("size") if isinstance(asset.get("size"), int) else None
    digest = asset.get("digest")
    sha256 = digest[7:].lower() if isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest) else None
    read = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cache.write_text(cache.release_note_path(target), json.dumps(
        {"asset_url": asset_url, "api": url, "size": size, "sha256": sha256, "read": read}))
    return Published(size=size, sha256=sha256, source=f"GitHub release API, read {read}")


def _answer(response: requests.Response, url: str) -> dict[str, Any]:
    status = response.status_code
    if status == 403 and response.headers.get("X-RateLimit-Remaining") == "0":
        raise PublisherUnavailable(f"GitHub release API {url}: rate limit exceeded (HTTP 403; unauthenticated "
                                   "calls are limited to 60 an hour: set GITHUB_TOKEN)")
    if status == 401:
        raise PublisherUnavailable(f"GitHub release API {url}: GITHUB_TOKEN was refused (HTTP 401)")
    if status == 404:
        raise PublisherUnavailable(f"GitHub release API {url}: no such release (HTTP 404)")
    if status != 200:
        raise PublisherUnavailable(f"GitHub release API {url}: HTTP {status} {response.reason or ''}".rstrip())
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise PublisherUnavailable(f"GitHub release API {url}: the answer is not a JSON object")
    return document
