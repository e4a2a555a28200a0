"""The protocol every stack provider implements: where a target's toolchain comes from.

A provider turns a target into an image spec, says what a step's container needs bound in and
in its environment and how a step's script runs (the stack's modules loaded first), and states
its facts (the Pythons it builds for and where each comes from, its glibc floor, its compiler)
from the stack's `[providers.<name>]` data. `target_image` is the one image shape they share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from builder.engines.base import Mount
from builder.errors import CbuildError
from builder.images.paths import DEPS_DIR, OUT_DIR, SRC_DIR
from builder.images.python import CPython
from builder.images.spec import BaseImage, ImageSpec
from builder.targets.model import Stack, Target


@dataclass(frozen=True)
class PythonSource:
    version: str  # "3.11"
    source: str  # where the interpreter comes from, for messages and docs
    # Built from source in an image layer (builder.images.python); None: the image's own.
    cpython: CPython | None = None


class Provider(Protocol):
    name: str
    # The recipe keys of builder.recipes.fields.PROVIDER_KEYS it acts on ("system.modules");
    # a recipe setting one its provider does not honour is refused, not silently dropped.
    honours: frozenset[str]

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        """The target's image; a recipe's system packages make an image of their own."""
        ...

    def binds(self, target: Target) -> tuple[Mount, ...]:
        """Host folders every step of the target needs (a stack on CVMFS, say)."""
        ...

    def environment(self, target: Target) -> dict[str, str]:
        """What a step's environment needs beyond the image's own and the build's flags."""
        ...

    def step_command(self, target: Target, script: str, modules: tuple[str, ...] = ()) -> list[str]:
        """The command that runs a step's shell script, with `modules` (the recipe's, for this
        step) loaded after the stack's own where the provider has modules."""
        ...

    def failure(self, target: Target, output: str) -> CbuildError | None:
        """A step's failure that is the provider's (a module that would not load, the stack not
        there), as an error naming it; None when the step's own script failed."""
        ...

    def provenance(self, target: Target, modules: tuple[str, ...] = ()) -> dict[str, Any]:
        """What the manifest records of the provider for a build (the stack's revision, the
        modules loaded); empty when there is nothing beyond its name."""
        ...

    def pythons(self, stack: Stack) -> tuple[PythonSource, ...]: ...

    def unavailable(self, target: Target) -> CbuildError | None:
        """Why the target cannot be built here (its Python's source unreachable, say), with
        the fix; None when it can."""
        ...

    def glibc_floor(self, stack: Stack) -> str | None:
        """The glibc every node of the stack has ("2.36"); None when the data does not say."""
        ...

    def compiler(self, stack: Stack) -> str: ...


def target_image(
    provider: str,
    target: Target,
    table: dict[str, Any],
    extra_packages: tuple[str, ...] = (),
) -> ImageSpec:
    """A target's image from a `[providers.<name>]` table (base image, distribution, suite,
    apt_packages): the target's flags and labels, and the step folders; a recipe's system
    packages come after the provider's, sorted."""
    env = {
        **target.compiler_flags(),
        "CBUILD_TARGET": target.id,
        "CBUILD_CPU_LEVEL": target.cpu_level.name,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }
    labels = {
        "org.cbuild.target": target.id,
        "org.cbuild.stack": target.stack.name,
        "org.cbuild.provider": provider,
        "org.cbuild.python": target.python,
    }
    packages = table["apt_packages"]
    return ImageSpec(
        name=target.id,
        base=BaseImage(table["base_image"], table["distribution"], table["suite"]),
        packages=(*packages, *sorted(set(extra_packages) - set(packages))),
        env=tuple(sorted(env.items())),
        labels=tuple(sorted(labels.items())),
        steps=(f"mkdir -p {SRC_DIR} {DEPS_DIR} {OUT_DIR}",),
    )
