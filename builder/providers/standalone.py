"""The standalone provider: a plain distribution image with the stack's ABI floor (CI, laptops).

Everything it knows is the stack's `[providers.standalone]` table: base image, packages,
Pythons, glibc and compiler. The image carries the target's flags; steps need no binds.
"""

from __future__ import annotations

from typing import Any

from builder.engines.base import Mount
from builder.errors import CbuildError
from builder.images.spec import ImageSpec
from builder.providers.base import PythonSource, target_image
from builder.targets.model import Stack, Target


class StandaloneProvider:
    name = "standalone"

    def settings(self, stack: Stack) -> dict[str, Any]:
        return stack.providers[self.name]

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        return target_image(self.name, target, self.settings(target.stack), extra_packages)

    def binds(self, target: Target) -> tuple[Mount, ...]:
        return ()

    def environment(self, target: Target) -> dict[str, str]:
        return {}

    def step_command(self, target: Target, script: str, modules: tuple[str, ...] = ()) -> list[str]:
        return ["sh", "-c", script]  # no modules: the image has the toolchain

    def failure(self, target: Target, output: str) -> CbuildError | None:
        return None

    def provenance(self, target: Target, modules: tuple[str, ...] = ()) -> dict[str, Any]:
        return {}

    def pythons(self, stack: Stack) -> tuple[PythonSource, ...]:
        prov = self.settings(stack)
        where = f"{prov['distribution']} {prov['suite']}'s python3 package"
        return tuple(PythonSource(v, where) for v in stack.provider_pythons(self.name))

    def glibc_floor(self, stack: Stack) -> str | None:
        glibc = self.settings(stack).get("glibc")
        return str(glibc) if glibc else None

    def compiler(self, stack: Stack) -> str:
        return str(self.settings(stack).get("compiler", ""))
