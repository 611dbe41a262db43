"""Where :mod:`.sources` may look for a file, and how hard."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import environment, options
from .transfer import RetryPolicy

__all__ = ["SourceSettings"]


@dataclass(frozen=True)
class SourceSettings:
    """Where files may come from and how hard to try; :meth:`from_env` reads the environment. ``mirror`` is a base
    URL or a folder; ``hf_endpoint`` and ``hf_cache_dir`` default to huggingface_hub's own; ``github_api`` is asked for
    the publisher's digests, with ``github_token`` when set."""

    offline: bool = False
    mirror: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    hf_endpoint: str | None = None
    hf_cache_dir: str | None = None
    github_api: str = options.GITHUB_API
    github_token: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> SourceSettings:
        """Settings from the environment (:mod:`resnest_zoo.environment`), then ``overrides``."""
        values: dict[str, object] = {
            "offline": environment.flag(environment.OFFLINE) or environment.flag(environment.HF_OFFLINE),
            "mirror": environment.location(environment.MIRROR), "policy": RetryPolicy.from_env(),
            "github_api": environment.text(environment.GITHUB_API) or options.GITHUB_API,
            "github_token": environment.text(environment.GITHUB_TOKEN)}
        return cls(**{**values, **overrides})  # type: ignore[arg-type]

    @property
    def offline_reason(self) -> str:
        """What made this offline, for messages: the variable that says so, or ``offline=True``."""
        on = [variable.name for variable in (environment.OFFLINE, environment.HF_OFFLINE) if environment.flag(variable)]
        return f"{on[0]}={os.environ[on[0]]}" if on else "offline=True"
