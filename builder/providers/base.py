"""The protocol every stack provider implements: where a target's toolchain comes from.

A provider turns a target into an image spec, says what a step's container needs bound in and
in its environment, and states its facts (the Pythons it builds for and where each comes from,
its glibc floor, its compiler) from the stack's `[providers.<name>]` data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from builder.engines.base import Mount
from builder.images.spec import ImageSpec
from builder.targets.model import Stack, Target


@dataclass(frozen=True)
class PythonSource:
    version: str  # "3.11"
    source: str  # where the interpreter comes from, for messages and docs


class Provider(Protocol):
    name: str

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        """The target's image; a recipe's system packages make an image of their own."""
        ...

    def binds(self, target: Target) -> tuple[Mount, ...]:
        """Host folders every step of the target needs (a stack on CVMFS, say)."""
        ...

    def environment(self, target: Target) -> dict[str, str]:
        """What a step's environment needs beyond the image's own and the build's flags."""
        ...

    def pythons(self, stack: Stack) -> tuple[PythonSource, ...]: ...

    def glibc_floor(self, stack: Stack) -> str | None:
        """The glibc every node of the stack has ("2.36"); None when the data does not say."""
        ...

    def compiler(self, stack: Stack) -> str: ...
