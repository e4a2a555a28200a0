"""What a step needs to build on the site's real stack from CVMFS, rendered by pure functions.

Everything stack-specific (paths, module names, variables) is the stack's `[providers.cvmfs]`
data; this module combines it with a target and a recipe's modules into the step's environment,
its bash prologue (profile, then `module load`), its binds, and reads the stack's revision.
A failed prologue prints a marker line (`failure` turns it into a clear error).
"""

from __future__ import annotations

import errno
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from builder.engines.base import Mount
from builder.errors import ConfigError
from builder.images.scripts import STEP_MARK
from builder.targets.model import Stack

PROVIDER = "cvmfs"
MODULE_FAILED = "::cbuild-module-failed::"  # + the module (or modules) Lmod would not load
STACK_MISSING = "::cbuild-stack-missing::"  # + what was missing: the profile, or `module`


class _Level(Protocol):
    name: str


class TargetLike(Protocol):
    """What this module reads of a target (builder.targets.Target has it)."""

    @property
    def id(self) -> str: ...
    @property
    def stack(self) -> Stack: ...
    @property
    def cpu_level(self) -> _Level: ...  # a generic target's is the stack's baseline
    @property
    def accelerator(self) -> str: ...  # "cpu" | "cuda12" | ...
    @property
    def python(self) -> str: ...  # "3.11"


@dataclass(frozen=True)
class CvmfsSettings:
    """The stack's `[providers.cvmfs]` table, checked and typed."""

    stack: str
    mount: str  # the host folder bound as is: "/cvmfs"
    mount_propagation: str  # "rslave": autofs mounts made later appear in the container
    repository: str  # "/cvmfs/soft.computecanada.ca", inside mount
    profile: str  # relative to repository
    revision_xattr: str
    modules: tuple[str, ...]  # templates: {python}
    cuda_module: str  # template: {cuda}
    force_variable: str
    arch_variable: str
    arch_values: tuple[tuple[str, str], ...]  # (CPU level, the stack's name for it)
    cuda_driver_variable: str
    cuda_driver_version: str

    @property
    def profile_path(self) -> str:
        return str(PurePosixPath(self.repository) / self.profile)

    def host_repository(self, host_mount: Path | None = None) -> Path:
        """The repository on the host, whose `mount` may be a stand-in folder (tests)."""
        rel = PurePosixPath(self.repository).relative_to(self.mount)
        return (host_mount or Path(self.mount)) / rel


_KEYS = {
    "mount": str,
    "mount_propagation": str,
    "repository": str,
    "profile": str,
    "revision_xattr": str,
    "modules": list,
    "cuda_module": str,
    "force_variable": str,
    "arch_variable": str,
    "arch_values": dict,
    "cuda_driver_variable": str,
    "cuda_driver_version": str,
}


def settings(stack: Stack) -> CvmfsSettings:
    where = f"[providers.{PROVIDER}] of stack {stack.name!r}"
    table: dict[str, Any] = stack.providers.get(PROVIDER, {})
    if not table:
        raise ConfigError(f"no {where}", fix="the stack file needs that table to use CVMFS")
    for key, kind in _KEYS.items():
        if not isinstance(table.get(key), kind):
            raise ConfigError(f"{where}: {key!r} missing or not a {kind.__name__}")
    if not PurePosixPath(table["repository"]).is_relative_to(table["mount"]):
        raise ConfigError(f"{where}: repository {table['repository']!r} not under mount")
    return CvmfsSettings(
        stack=stack.name,
        modules=tuple(table["modules"]),
        arch_values=tuple(sorted(table["arch_values"].items())),
        **{k: table[k] for k in _KEYS if k not in ("modules", "arch_values")},
    )


# --- environment -----------------------------------------------------------------------------
def _cuda(accelerator: str) -> str | None:
    """The CUDA major of an accelerator ("cuda12" -> "12"); None for a CPU target."""
    if accelerator == "cpu":
        return None
    m = re.fullmatch(r"cuda(\d+)", accelerator)
    if not m:
        raise ConfigError(f"accelerator {accelerator!r} is not cpu or cudaNN")
    return m.group(1)


def arch_value(target: TargetLike, s: CvmfsSettings) -> str:
    level = target.cpu_level.name
    values = dict(s.arch_values)
    if level not in values:
        raise ConfigError(
            f"stack {s.stack!r} names no {s.arch_variable} for CPU level {level!r}",
            fix=f"add {level!r} to arch_values in [providers.{PROVIDER}] of the stack file",
        )
    return values[level]


def environment(target: TargetLike, s: CvmfsSettings) -> dict[str, str]:
    """What the stack's profile and modules read: as the site's own builder sets it."""
    env = {s.force_variable: "1", s.arch_variable: arch_value(target, s)}
    if _cuda(target.accelerator):
        env[s.cuda_driver_variable] = s.cuda_driver_version
    return env


# --- modules and the prologue ----------------------------------------------------------------
def step_modules(
    target: TargetLike,
    s: CvmfsSettings,
    modules: Iterable[str] = (),
    runtime_modules: Iterable[str] = (),
    step: Literal["build", "test"] = "build",
) -> tuple[str, ...]:
    """The stack's modules, the CUDA one, then the recipe's: a build loads `modules` and
    `runtime_modules`, a test only `runtime_modules`. Order kept, repeats dropped."""
    cuda = _cuda(target.accelerator)
    names = [m.format(python=target.python) for m in s.modules]
    if cuda:
        names.append(s.cuda_module.format(cuda=cuda))
    names += [*(modules if step == "build" else ()), *runtime_modules]
    return tuple(dict.fromkeys(names))


def prologue(s: CvmfsSettings, modules: Iterable[str]) -> str:
    """Bash run before a step's script: source the profile, then load the modules at once
    (one Lmod call: ~0.5 s here, against ~2.5 s one by one); only on failure load them one
    by one to name the module Lmod refused in the marker line."""
    mods = tuple(modules)
    profile = shlex.quote(s.profile_path)
    names = " ".join(shlex.quote(m) for m in mods)
    return "\n".join(
        [
            f"echo '{STEP_MARK} modules'",
            f"if [ ! -r {profile} ]; then",
            f"    echo {shlex.quote(f'{STACK_MISSING} {s.profile_path}')}; exit 1",
            "fi",
            f"source {profile}",
            "if ! type module >/dev/null 2>&1; then",
            f"    echo '{STACK_MISSING} module'; exit 1",
            "fi",
            f"if ! module load {names}; then",
            f"    for m in {names}; do",
            f'        module load "$m" || {{ echo "{MODULE_FAILED} $m"; exit 1; }}',
            "    done",
            f"    echo {shlex.quote(MODULE_FAILED + ' ' + ' '.join(mods))}; exit 1",
            "fi",
            "module --terse list 2>&1",
            "",
        ]
    )


def command(prologue_text: str, script: str, *args: str) -> list[str]:
    """A step's command: Lmod's `module` is a bash function, so the step runs in bash."""
    return ["bash", "-c", prologue_text + script, *args]


def failure(output: str, target: TargetLike, s: CvmfsSettings) -> ConfigError | None:
    """The prologue's failure as an error naming the module and the stack; None if it passed."""
    where = (
        f"the {s.stack} stack at {s.repository} "
        f"({s.arch_variable}={arch_value(target, s)}, target {target.id})"
    )
    for line in output.splitlines():
        if line.startswith(MODULE_FAILED):
            name = line.removeprefix(MODULE_FAILED).strip()
            return ConfigError(
                f"module {name} could not be loaded from {where}",
                fix=f"check the recipe's modules/runtime_modules (`module spider {name}` on a "
                "node of the stack shows what exists); the log has Lmod's own message",
            )
        if line.startswith(STACK_MISSING):
            what = line.removeprefix(STACK_MISSING).strip()
            missing = "no `module` command after its profile" if what == "module" else "no profile"
            return ConfigError(
                f"{where} is not usable: {missing} ({s.profile_path})",
                fix=f"mount the repository at {s.repository} on this host (the profile must "
                "start Lmod), or build with `--provider standalone`",
            )
    return None


# --- binds and revision ----------------------------------------------------------------------
def binds(s: CvmfsSettings, host_mount: Path | None = None) -> tuple[Mount, ...]:
    """`mount` read-only with `mount_propagation` (the test's stand-in folder bound there
    instead): Docker/Podman get `-v /cvmfs:/cvmfs:ro,rslave`; Apptainer binds with
    `--bind /cvmfs` and propagates the host's later mounts by itself (`mount slave = yes`)."""
    host = host_mount or Path(s.mount)
    return (Mount(host, s.mount, read_only=True, propagation=s.mount_propagation),)


def available(s: CvmfsSettings, host_mount: Path | None = None) -> bool:
    """The stack's profile is there (autofs mounts the repository on this access)."""
    return (s.host_repository(host_mount) / s.profile).is_file()


def revision(s: CvmfsSettings, host_mount: Path | None = None) -> str | None:
    """The repository's revision (CVMFS's `user.revision` attribute of its root); None where
    the file system has none (not CVMFS, or not mounted)."""
    try:
        value = os.getxattr(s.host_repository(host_mount), s.revision_xattr)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT, errno.EOPNOTSUPP):
            return None
        raise
    return value.decode().strip() or None
