"""The standalone provider: a plain distribution image with the stack's ABI floor (CI, laptops).

Everything it knows is the stack's `[providers.standalone]` table: base image, packages,
Pythons, glibc and compiler. The image carries the target's flags; steps need no binds.
"""

from __future__ import annotations

from typing import Any

from builder.engines.base import Mount
from builder.errors import CbuildError, ConfigError
from builder.images.cuda import toolkit, toolkit_files, with_toolkit
from builder.images.python import CPython, sources_fix, with_cpython
from builder.images.python import unavailable as cpython_unavailable
from builder.images.spec import ImageSpec, SourceFile
from builder.providers.base import PythonSource, target_image
from builder.targets.model import Stack, Target


class StandaloneProvider:
    name = "standalone"
    honours: frozenset[str] = frozenset()  # no modules: the image has the toolchain

    def settings(self, stack: Stack) -> dict[str, Any]:
        return stack.providers[self.name]

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        table = self.settings(target.stack)
        spec = target_image(self.name, target, table, extra_packages)
        py = self.python(target.stack, target.python).cpython
        spec = spec if py is None else with_cpython(spec, py, tuple(table["apt_packages"]))
        # a CUDA target: the pinned toolkit in a layer of its own (builder.images.cuda)
        return with_toolkit(spec, toolkit(target.cuda)) if target.cuda else spec

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
        """Each Python of the table's `pythons`: the distribution's, or CPython from source."""
        prov = self.settings(stack)
        system = f"{prov['distribution']} {prov['suite']}'s python3 package"
        out = []
        for version in stack.provider_pythons(self.name):
            entry = prov.get("pythons", {}).get(version, {"from": "system"})
            if entry.get("from", "system") == "system":
                out.append(PythonSource(version, system))
                continue
            try:
                py = CPython(
                    version=version,
                    release=entry["release"],
                    prefix=prov["cpython_prefix"].format(python=version),
                    tarball=SourceFile(entry["file"], entry["sha256"], tuple(entry["mirrors"])),
                    build_packages=tuple(prov["cpython_build_packages"]),
                )
            except KeyError as exc:
                raise ConfigError(
                    f"[providers.{self.name}.pythons.{version!r}] of stack {stack.name!r}: "
                    f"no {exc.args[0]!r}",
                    fix='a `from = "source"` Python needs release, file, sha256, mirrors '
                    "(and the table cpython_prefix, cpython_build_packages)",
                ) from None
            out.append(PythonSource(version, f"CPython {py.release} built from source", py))
        return tuple(out)

    def python(self, stack: Stack, version: str) -> PythonSource:
        for src in self.pythons(stack):
            if src.version == version:
                return src
        raise ConfigError(
            f"the {self.name} provider has no Python {version} for stack {stack.name!r}",
            fix=f"use one of {', '.join(stack.provider_pythons(self.name))}",
        )

    def unavailable(self, target: Target) -> ConfigError | None:
        py = self.python(target.stack, target.python).cpython
        inputs = (py.tarball,) if py else ()
        inputs += tuple(p.source for p in toolkit_files(target.cuda)) if target.cuda else ()
        for src in inputs:  # a Python's tarball, a CUDA toolkit's files
            if why := cpython_unavailable(src):
                return ConfigError(why, fix=sources_fix(src))
        return None

    def glibc_floor(self, stack: Stack) -> str | None:
        glibc = self.settings(stack).get("glibc")
        return str(glibc) if glibc else None

    def compiler(self, stack: Stack) -> str:
        return str(self.settings(stack).get("compiler", ""))
