"""The standalone provider: a plain distribution image with the stack's ABI floor (CI, laptops).

Everything it knows is the stack's `[providers.standalone]` table: base image, packages,
Pythons, glibc and compiler. The image carries the target's flags; steps need no binds.
"""

from __future__ import annotations

from typing import Any

from builder.engines.base import Mount
from builder.images.paths import DEPS_DIR, OUT_DIR, SRC_DIR
from builder.images.spec import BaseImage, ImageSpec
from builder.providers.base import PythonSource
from builder.targets.model import Stack, Target


class StandaloneProvider:
    name = "standalone"

    def settings(self, stack: Stack) -> dict[str, Any]:
        return stack.providers[self.name]

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        prov = self.settings(target.stack)
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
            "org.cbuild.provider": self.name,
            "org.cbuild.python": target.python,
        }
        packages = prov["apt_packages"]
        return ImageSpec(
            name=target.id,
            base=BaseImage(prov["base_image"], prov["distribution"], prov["suite"]),
            packages=(*packages, *sorted(set(extra_packages) - set(packages))),
            env=tuple(sorted(env.items())),
            labels=tuple(sorted(labels.items())),
            steps=(f"mkdir -p {SRC_DIR} {DEPS_DIR} {OUT_DIR}",),
        )

    def binds(self, target: Target) -> tuple[Mount, ...]:
        return ()

    def environment(self, target: Target) -> dict[str, str]:
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
