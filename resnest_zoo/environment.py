"""Every environment variable resnest_zoo reads: its name, what it means, and how its value is parsed.

This module is the only place that knows the names; the rest of the package asks it
(``environment.flag(environment.OFFLINE)``, ``environment.number(environment.RETRIES, ...)`` ...), and the
documentation's table of variables is checked against :data:`VARIABLES` by the tests. A value that cannot be parsed raises :class:`ConfigurationError`
naming the variable, the value received and what it accepts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from .errors import ConfigurationError
from .options import GITHUB_API as GITHUB_API_DEFAULT
from .options import MAX_RETRY_DELAY
from .options import RETRIES as RETRIES_DEFAULT
from .options import RETRY_DELAY as RETRY_DELAY_DEFAULT
from .options import TIMEOUT as TIMEOUT_DEFAULT

__all__ = [
    "Variable",
    "VARIABLES",
    "CACHE",
    "MIRROR",
    "OFFLINE",
    "HF_OFFLINE",
    "RETRIES",
    "RETRY_DELAY",
    "TIMEOUT",
    "GITHUB_API",
    "GITHUB_TOKEN",
    "API_KEY",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "LAUNCHER_VARIABLES",
    "flag",
    "text",
    "location",
    "number",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name and a one-line description (the docs' table: docs/make_tables.py)."""

    name: str
    meaning: str

    def raw(self) -> str | None:
        """The value as set (stripped), or None when unset or empty."""
        value = os.environ.get(self.name)
        return value.strip() if value is not None and value.strip() else None


CACHE = Variable("RESNEST_ZOO_CACHE", "cache folder")
MIRROR = Variable("RESNEST_ZOO_MIRROR", "base URL or local folder tried before the catalogue URL")
OFFLINE = Variable("RESNEST_ZOO_OFFLINE", "1: never touch the network")
HF_OFFLINE = Variable("HF_HUB_OFFLINE", "1: never touch the network (huggingface_hub's own switch, honoured too)")
RETRIES = Variable("RESNEST_ZOO_RETRIES", f"retries after a failed transfer (default {RETRIES_DEFAULT})")
RETRY_DELAY = Variable("RESNEST_ZOO_RETRY_DELAY", f"backoff factor in seconds: retries wait 0, 2, 4, 8 ... times it, "
                                                  f"at most {MAX_RETRY_DELAY:g} s (default {RETRY_DELAY_DEFAULT:g})")
TIMEOUT = Variable("RESNEST_ZOO_TIMEOUT", f"network timeout in seconds (default {TIMEOUT_DEFAULT:g})")
GITHUB_API = Variable("RESNEST_ZOO_GITHUB_API", "GitHub API base URL asked for release assets' size and digest "
                      f"(default {GITHUB_API_DEFAULT}; GitHub Enterprise: https://HOST/api/v3)")
GITHUB_TOKEN = Variable("GITHUB_TOKEN", "token sent to that API when set (unauthenticated calls: 60 an hour)")
API_KEY = Variable("RESNEST_ZOO_API_KEY", "key that resnest-zoo serve requires as Authorization: Bearer KEY on every "
                   "endpoint but /healthz and /readyz (as --api-key, which takes precedence)")

VARIABLES: tuple[Variable, ...] = (CACHE, MIRROR, OFFLINE, HF_OFFLINE, RETRIES, RETRY_DELAY, TIMEOUT, GITHUB_API,
                                   GITHUB_TOKEN, API_KEY)

# Set by torchrun for each process it starts, never by hand; read by :mod:`resnest_zoo.distributed` alone.
RANK = Variable("RANK", "this process's rank among all processes of the run (torchrun)")
WORLD_SIZE = Variable("WORLD_SIZE", "number of processes of the run, all nodes together (torchrun)")
LOCAL_RANK = Variable("LOCAL_RANK", "this process's rank on its node: the GPU it uses (torchrun)")
LAUNCHER_VARIABLES: tuple[Variable, ...] = (RANK, WORLD_SIZE, LOCAL_RANK)
LOCAL_WORLD_SIZE = Variable("LOCAL_WORLD_SIZE", "number of processes of the run on this node (torchrun)")


def flag(variable: Variable) -> bool:
    """A yes/no variable: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case; unset: no)."""
    value = (variable.raw() or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(
        f"environment variable {variable.name}={os.environ.get(variable.name)!r} is not a yes/no value: "
        f"use 1, true, yes or on to enable it, 0, false, no or off (or unset it) to disable it"
    )


def text(variable: Variable) -> str | None:
    """A free-text variable (a path or a URL), or None when unset or empty."""
    return variable.raw()


def location(variable: Variable) -> str | None:
    """A base URL or a folder: an http(s) URL as given, or the path of an existing folder (``file://`` URLs name
    folders); None when unset. Anything else (``ftp://...``, a folder that does not exist) raises
    :class:`ConfigurationError` saying why."""
    value = variable.raw()
    if value is None or value.startswith(("http://", "https://")):
        return value
    folder = os.path.expanduser(unquote(urlparse(value).path) if value.startswith("file://") else value)
    if os.path.isdir(folder):
        return folder
    why = f"{value.split('://')[0]}:// is not supported" if "://" in value and not value.startswith("file://") else \
        f"there is no folder {folder}"
    raise ConfigurationError(f"environment variable {variable.name}={os.environ.get(variable.name)!r} is neither an "
                             f"http(s) URL nor an existing folder ({why}): give a base URL (https://HOST/PATH) or the "
                             "folder holding the published files, or unset it")


def number(variable: Variable, default: float, kind: type = float, *, minimum: float = 0) -> float:
    """A numeric variable (``kind`` int or float), at least ``minimum``; ``default`` when unset or empty."""
    value_text = variable.raw()
    if value_text is None:
        return default
    wanted = "a whole number" if kind is int else "a number"
    try:
        value = kind(value_text)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum or value in (float("inf"), float("-inf")):
        raise ConfigurationError(
            f"environment variable {variable.name}={os.environ.get(variable.name)!r} is not valid: it must be "
            f"{wanted} of at least {minimum:g} (default {default:g}); fix or unset it"
        )
    return value
