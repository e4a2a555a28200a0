"""CUDA targets in a job: the GPU architectures a target's wheel promises (the recipe's
[build] cuda_archs, else the stack's), checked against the toolkit in the target's image before
any build; handed to the build in every build system's convention; proven after it from the
wheel's device code (the GPU twin of the ISA scan); and the test's environment and words when
no GPU is there (cudart present, no driver: the import runs, no kernel does)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from builder.engines.base import RunSpec
from builder.errors import ConfigError
from builder.images import cuda as toolkits
from builder.images.paths import CUDA_HOME
from builder.progress import TargetProgressFn
from builder.providers import get_provider
from builder.recipes import Recipe
from builder.targets.gpu import GpuArchs, check_known
from builder.targets.model import Target
from builder.wheels.cuda import check_device_code, scan_wheel_device_code

NO_GPU = "GPU code not exercised: no GPU"


def promised(recipe: Recipe, t: Target) -> GpuArchs | None:
    """The architectures `t`'s wheel promises; None for a CPU target."""
    if not t.cuda:
        return None
    archs = recipe.for_target(t).cuda_archs
    return GpuArchs.parse_cmake(archs) if archs else t.stack.gpu_archs(t.cuda)


def check_archs(
    engine: Any,
    progress: TargetProgressFn,
    targets: tuple[Target, ...],
    images: dict[str, str],
    recipe: Recipe,
    logs: Path,
) -> None:
    """Before any build: every CUDA target's architectures are known to the toolkit of its
    image (`nvcc --list-gpu-code`, asked once per image); else a ConfigError naming them."""
    listings: dict[str, str] = {}
    for t in targets:
        archs, image = promised(recipe, t), images[t.id]
        if archs is None:
            continue
        if image not in listings:
            progress(t.id, "GPU architectures (nvcc --list-gpu-code)")
            provider = get_provider(t.provider)
            log = logs / f"{t.id}.list-gpu-code.log"
            res = engine.run(
                RunSpec(
                    image,
                    provider.step_command(t, "nvcc --list-gpu-code"),
                    mounts=provider.binds(t),
                    env=provider.environment(t),
                ),
                log,
            )
            if not res.ok:
                raise ConfigError(
                    f"{t.id}: `nvcc --list-gpu-code` failed in its image (log: {log})",
                    fix="the image of a CUDA target must have the toolkit's nvcc on PATH",
                )
            listings[image] = res.output
        if unknown := check_known(archs, listings[image]):
            raise ConfigError(
                f"{t.id}: {'; '.join(unknown)}; nothing was built",
                fix="name architectures the toolkit knows in the recipe's [build] cuda_archs "
                "(or the stack's cuda_archs), or build that architecture with another CUDA",
            )


def build_env(recipe: Recipe, t: Target) -> dict[str, str]:
    """The build's GPU architectures in every build system's convention; {} for a CPU target."""
    archs = promised(recipe, t)
    return toolkits.build_env(toolkits.toolkit(t.cuda), archs) if t.cuda and archs else {}


def check_wheel(recipe: Recipe, t: Target, wheel: Path) -> tuple[dict[str, Any], str | None]:
    """A CUDA target's wheel against what it promises: (what the manifest records: toolkit,
    promised architectures, each ELF file's SASS and PTX; the failure, or None)."""
    archs = promised(recipe, t)
    if not t.cuda or archs is None:
        return {}, None
    codes = scan_wheel_device_code(wheel)
    record = {
        # the pinned toolkit of the standalone image; a stack's own comes as its module
        "toolkit": toolkits.toolkit(t.cuda).as_dict() if t.provider == "standalone" else None,
        "promised": {"sass": list(archs.sass), "ptx": list(archs.ptx), "cmake": archs.cmake()},
        "device_code": {c.path: {"sass": list(c.sass), "ptx": list(c.ptx)} for c in codes},
    }
    problems = check_device_code(codes, archs)
    return record, (f"{wheel.name} {'; '.join(problems)}" if problems else None)


def test_env(t: Target) -> dict[str, str]:
    """The test's environment of a CUDA target: the toolkit's cudart (a wheel never carries
    it) found by the loader; no driver, so no kernel runs."""
    return {"LD_LIBRARY_PATH": f"{CUDA_HOME}/lib"} if t.cuda else {}


def gpu_here() -> str | None:
    """The host's GPUs as `nvidia-smi -L` names them; None where it does not answer."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().replace("\n", "; ") if out.returncode == 0 and out.stdout else None


def test_words(t: Target) -> str:
    """What a passed import test of a CUDA target proved, GPU-wise."""
    if not t.cuda:
        return ""
    gpu = gpu_here()
    if gpu is None:
        return f"imported; {NO_GPU}"
    return (
        f"imported; GPU code not exercised: a GPU is here ({gpu}) but cbuild does not give "
        "containers a GPU yet"
    )
