"""How hard and where :mod:`.sources` may look for a file: offline or not, the mirror, retries, the Hugging Face
endpoint and cache, the GitHub release API; read from the environment (:mod:`resnest_zoo.environment`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import environment
from .release import DEFAULT_API
from .transfer import RetryPolicy

__all__ = ["SourceSettings"]


@dataclass(frozen=True)
class SourceSettings:
    """Where files may come from and how hard to try; :meth:`from_env` reads the environment.

    ``hf_endpoint`` and ``hf_cache_dir`` default to huggingface_hub's own (``HF_ENDPOINT``, ``HF_HUB_CACHE``);
    ``github_api`` is the API asked for the publisher's digests, ``github_token`` sent to it when set.
    """

    offline: bool = False
    mirror: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    hf_endpoint: str | None = None
    hf_cache_dir: str | None = None
    github_api: str = DEFAULT_API
    github_token: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> SourceSettings:
        """Settings from the environment (see :mod:`resnest_zoo.environment`), then ``overrides``."""
        values: dict[str, object] = {
            "offline": environment.flag(environment.OFFLINE) or environment.flag(environment.HF_OFFLINE),
            "mirror": environment.location(environment.MIRROR),
            "policy": RetryPolicy.from_env(),
            "github_api": environment.text(environment.GITHUB_API) or DEFAULT_API,
            "github_token": environment.text(environment.GITHUB_TOKEN),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def offline_reason(self) -> str:
        for variable in (environment.OFFLINE, environment.HF_OFFLINE):
            if environment.flag(variable):
                return f"{variable.name}={os.environ[variable.name]}"
        return "offline=True"
