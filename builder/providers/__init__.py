"""Stack providers: where a target's toolchain comes from (a standalone image today; the real
stack from CVMFS later). `PROVIDERS` is the registry; `spec_for` gives a target's image spec."""

from __future__ import annotations

from collections.abc import Callable

from builder.errors import ConfigError
from builder.images.spec import ImageSpec
from builder.providers.base import Provider, PythonSource
from builder.providers.standalone import StandaloneProvider
from builder.targets.model import Target

# name (a target's `provider`, a `[providers.<name>]` table in the stack data) -> factory
PROVIDERS: dict[str, Callable[[], Provider]] = {"standalone": StandaloneProvider}


def get_provider(name: str) -> Provider:
    if name not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {name!r}", fix=f"known providers: {', '.join(PROVIDERS)}"
        )
    return PROVIDERS[name]()


def spec_for(target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
    """The target's image, made by its provider; a recipe's system packages make an image of
    their own (a different definition, so a different hash and tag)."""
    return get_provider(target.provider).image_spec(target, extra_packages)


__all__ = ["PROVIDERS", "Provider", "PythonSource", "get_provider", "spec_for"]
