"""The cvmfs provider: the site's real stack, bind-mounted from the host's /cvmfs and loaded with
Lmod in a thin image (the compatibility layer brings the toolchain, glibc and Pythons).

What a step needs (environment, bash prologue, binds, the revision) is rendered by
`cvmfs_env` from the stack's `[providers.cvmfs]` data; this class is the Provider around it.
`CBUILD_CVMFS_MOUNT` names a host folder to bind as `/cvmfs` instead of `/cvmfs` itself (the
tests' miniature stack; a site that mounts CVMFS elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from builder.engines.base import Mount
from builder.errors import CbuildError, ConfigError
from builder.images.cuda import REPRODUCIBLE_NVCC
from builder.images.spec import ImageSpec
from builder.providers import cvmfs_env as cv
from builder.providers.base import PythonSource, target_image
from builder.targets.model import Stack, Target

MOUNT_VARIABLE = "CBUILD_CVMFS_MOUNT"


def host_mount() -> Path | None:
    """The host folder bound as the stack's `mount`; None: the `mount` itself (/cvmfs)."""
    value = os.environ.get(MOUNT_VARIABLE, "")
    return Path(value) if value else None


class CvmfsProvider:
    name = cv.PROVIDER
    honours = frozenset({"system.modules", "system.runtime_modules"})  # loaded with Lmod

    def settings(self, stack: Stack) -> cv.CvmfsSettings:
        return cv.settings(stack)

    def image_spec(self, target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
        return target_image(self.name, target, target.stack.providers[self.name], extra_packages)

    def binds(self, target: Target) -> tuple[Mount, ...]:
        return cv.binds(self.settings(target.stack), host_mount())

    def environment(self, target: Target) -> dict[str, str]:
        env = cv.environment(target, self.settings(target.stack))
        if target.accelerator != "cpu":  # the stack's nvcc, made reproducible as ours is
            env["NVCC_APPEND_FLAGS"] = " ".join(REPRODUCIBLE_NVCC)
        return env

    def modules(self, target: Target, modules: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The stack's modules, the CUDA one, then `modules` (the recipe's, for this step)."""
        return cv.step_modules(target, self.settings(target.stack), modules)

    def step_command(self, target: Target, script: str, modules: tuple[str, ...] = ()) -> list[str]:
        s = self.settings(target.stack)
        return cv.command(cv.prologue(s, self.modules(target, modules)), script)

    def failure(self, target: Target, output: str) -> CbuildError | None:
        return cv.failure(output, target, self.settings(target.stack))

    def provenance(self, target: Target, modules: tuple[str, ...] = ()) -> dict[str, Any]:
        s = self.settings(target.stack)
        return {
            "name": self.name,
            "repository": s.repository,
            # None where the file system has no revision (not CVMFS: the miniature stack
            # without its attribute); the field is there either way.
            "revision": cv.revision(s, host_mount()),
            "modules": list(self.modules(target, modules)),
            "environment": cv.environment(target, s),
        }

    def unavailable(self, target: Target) -> CbuildError | None:
        """The stack not mounted here: a clear error before any image is built (a python/X.Y
        module the stack lacks is the step's error, naming the module)."""
        s = self.settings(target.stack)
        if cv.available(s, host_mount()):
            return None
        return ConfigError(
            f"--provider cvmfs: the {s.stack} stack is not mounted here "
            f"(no {s.host_repository(host_mount()) / s.profile})",
            fix=f"mount {s.repository} (a CVMFS client; `cbuild doctor` checks it), set "
            f"{MOUNT_VARIABLE} to the folder that holds it, or use --provider standalone",
        )

    def available(self, stack: Stack) -> bool:
        """The stack's profile is there to source (autofs mounts the repository on access)."""
        return cv.available(self.settings(stack), host_mount())

    def status(self, stack: Stack) -> dict[str, Any]:
        """Whether the stack is mounted here, where, and its revision (`cbuild doctor`)."""
        s = self.settings(stack)
        mounted = cv.available(s, host_mount())
        return {
            "stack": stack.name,
            "repository": s.repository,
            "host_path": str(s.host_repository(host_mount())),
            "profile": s.profile_path,
            "mounted": mounted,
            "revision": cv.revision(s, host_mount()) if mounted else None,
        }

    def pythons(self, stack: Stack) -> tuple[PythonSource, ...]:
        s = self.settings(stack)
        return tuple(
            PythonSource(v, f"module python/{v} of {s.repository}")
            for v in stack.provider_pythons(self.name)
        )

    def glibc_floor(self, stack: Stack) -> str | None:
        glibc = stack.providers[self.name].get("glibc")
        return str(glibc) if glibc else None

    def compiler(self, stack: Stack) -> str:
        return str(stack.providers[self.name].get("compiler", ""))
