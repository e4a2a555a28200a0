"""The build step (network off) and the repair of its wheel, for one target; a probe in the
same container records what compiled it (compiler, Python, glibc) for the manifest."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

from builder.engines.base import Mount, RunSpec
from builder.errors import ConfigError
from builder.images import scripts as steps
from builder.images.paths import (
    CCACHE_DIR,
    DEFAULT_PATH,
    DEPS_DIR,
    IN_DIR,
    OUT_DIR,
    PATCHES_DIR,
    SRC_DIR,
)
from builder.pipeline import cuda
from builder.pipeline.model import RunContext, Status, TargetResult
from builder.providers import get_provider
from builder.recipes import Recipe
from builder.sources import archive_build_env
from builder.targets.model import Target
from builder.wheels import edit as wheeledit
from builder.wheels import repair
from builder.wheels.rpath import ElfEdits

# Network failures look like this in pip's and setuptools' output.
_NETWORK_SIGNS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Could not resolve host",
    "No matching distribution found",
)


def build(ctx: RunContext, r: TargetResult, image: str) -> None:
    """Build `r`'s target in `image`, then repair the wheel; `r` records the outcome."""
    t = r.target
    tid = t.id
    recipe = ctx.recipe.for_target(t)  # the target's and accelerator's overrides
    provider = get_provider(t.provider)  # a build loads the recipe's modules and runtime ones
    modules = (*recipe.modules, *recipe.runtime_modules)
    facts, work = ctx.facts, ctx.work
    ccache = ctx.cache.ccache(tid) if ctx.request.ccache else None
    out = work / "out" / tid
    out.mkdir(parents=True)
    r.build_log = work / "logs" / f"{tid}.build.log"
    flags = t.compiler_flags()
    prefix_map = f"-ffile-prefix-map={SRC_DIR}/{facts.top_folder}=/usr/src/{facts.top_folder}"
    env = {
        **flags,
        **{k: f"{flags[k]} {prefix_map}" for k in ("CFLAGS", "CXXFLAGS", "FFLAGS")},
        "SOURCE_DATE_EPOCH": str(facts.source_date_epoch),
        "PYTHONHASHSEED": "0",
        # Each of the `jobs` concurrent builds gets a fair share of the cores.
        **dict.fromkeys(
            ("MAX_JOBS", "CMAKE_BUILD_PARALLEL_LEVEL", "NPY_NUM_BUILD_JOBS"),
            str(max(1, (os.cpu_count() or 1) // max(1, ctx.request.jobs))),
        ),
        **provider.environment(t),
        **cuda.build_env(recipe, t),  # a CUDA target's GPU architectures
        # --sdist replaces [source]: an sdist carries its own version.
        **({} if ctx.request.sdist else archive_build_env(recipe.source.kind, recipe.version)),
        **recipe.env,
    }
    if ccache is not None:
        # Debian's masquerade folder puts ccache in front of gcc/g++ by name; objects come
        # out the same, from the cache or the compiler.
        ccache.mkdir(parents=True, exist_ok=True)
        env |= {"PATH": f"/usr/lib/ccache:{DEFAULT_PATH}", "CCACHE_DIR": CCACHE_DIR}
    ctx.progress(tid, "build (network off)")
    t0 = time.monotonic()
    script = steps.build_script(
        ctx.sdist.name,
        facts.top_folder,
        list(ctx.build_requires),
        recipe.pip_args,
        patches=recipe.patches,
        pre_build=recipe.pre_build,
        post_build=recipe.post_build,
        version=recipe.version,
    )
    script = f"{BUILD_FACTS_PROBE}\n{script}"  # prints facts only; the bits do not change
    r.build_env, r.built_on = env, tid
    res = ctx.engine.run(
        RunSpec(
            image=image,
            command=provider.step_command(t, script, modules),
            env=env,
            mounts=(
                *provider.binds(t),
                Mount(ctx.sdist.parent, IN_DIR),
                Mount(ctx.build_deps, DEPS_DIR),
                Mount(out, OUT_DIR, read_only=False),
                *([Mount(recipe.patches_dir, PATCHES_DIR)] if recipe.patches else []),
                *([Mount(ccache, CCACHE_DIR, read_only=False)] if ccache else []),
            ),
            network=False,
        ),
        r.build_log,
    )
    r.seconds["build"] = time.monotonic() - t0
    r.build_facts = parse_build_facts(res.output)
    if stack := provider.provenance(t, modules):  # the manifest's build.provider
        r.build_facts["provider"] = stack
    if not res.ok and (err := provider.failure(t, res.output)):
        raise ConfigError(f"{tid}: {err.message}; log: {r.build_log}", fix=err.fix)
    wheels = sorted(out.glob("*.whl"))
    if not res.ok or len(wheels) != 1:
        r.status = Status.BUILD_FAILED
        hint = ""
        if any(s in res.output for s in _NETWORK_SIGNS):
            hint = (
                " -- the build tried to reach the network, which is off during builds; "
                "add what it needs to the recipe's [build] requires"
            )
        r.reason = f"exit {res.exit_code}{hint}; log: {r.build_log}"
        r.test_detail = steps.patch_failure(res.output) or steps.failure_excerpt(res.output)
        return
    ctx.progress(tid, "repair")
    fixed = site_wheel(wheels[0], work / "wheels" / tid, recipe, t, facts.source_date_epoch)
    cuda_record, lacking = cuda.check_wheel(recipe, t, fixed.path)
    if cuda_record:  # the manifest's build.cuda
        r.build_facts["cuda"] = cuda_record
    if lacking:  # a CUDA target's wheel without the device code it promises
        r.status = Status.BUILD_FAILED
        r.reason = r.test_detail = f"{lacking}; log: {r.build_log}"
        return
    r.wheel = fixed.path
    r.is_pure = fixed.is_pure
    r.sha256 = repair.wheel_sha256(fixed.path)
    r.content_digest = repair.wheel_content_digest(fixed.path)
    r.status = Status.BUILT
    r.source_date_epoch = facts.source_date_epoch


# Run before the build script, in the build's container: what compiled the wheel, as the
# manifest records it. One marked JSON line; a missing tool is null.
FACTS_MARK = "::cbuild-facts::"
_FACTS_CODE = f"""\
import importlib.metadata, json, platform, subprocess, sysconfig
def first(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except Exception:
        return None
def debs():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${{Package}}=${{Version}}\\n"],
                             capture_output=True, text=True).stdout
    except Exception:
        return None
    return sorted(set(out.split()))
def pys():
    dists = importlib.metadata.distributions()
    return sorted({{f"{{d.metadata['Name']}}={{d.version}}" for d in dists if d.metadata['Name']}})
print("{FACTS_MARK}" + json.dumps({{
    "python": platform.python_version(),
    "python_cflags": sysconfig.get_config_var("CFLAGS"),
    "glibc": platform.libc_ver()[1],
    "gcc": first("gcc", "--version"),
    "gxx": first("g++", "--version"),
    "gfortran": first("gfortran", "--version"),
    "ld": first("ld", "--version"),
    "image_packages": {{"deb": debs(), "python": pys()}},
}}))
"""
BUILD_FACTS_PROBE = f"python3 -c {shlex.quote(_FACTS_CODE)} || true"
# A compiler's command line in pip's verbose output: the flags the build really used.
_COMPILE_LINE = re.compile(r"^\s*(\S*-)?(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|gfortran)\s.*\s-c\s")


def parse_build_facts(output: str) -> dict[str, Any]:
    """The probe's facts, and the first compile command of the build log, when there is one."""
    facts: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith(FACTS_MARK):
            with contextlib.suppress(ValueError):
                facts = json.loads(line[len(FACTS_MARK) :])
            break
    compile_line = next((ln.strip() for ln in output.splitlines() if _COMPILE_LINE.match(ln)), None)
    if compile_line:
        facts["first_compile_command"] = compile_line
    return facts


def site_wheel(
    wheel: Path, dest: Path, recipe: Recipe, t: Target, epoch: int
) -> repair.RepairResult:
    """A built or downloaded wheel made a site wheel: repaired (label, tags, requirements,
    ELF edits of [wheel] rpath*/replace_vendored), then the recipe's requirement edits and
    name suffix. The build step and the repackaging of binary wheels both end here."""
    fixed = repair.repair_wheel(
        wheel,
        dest,
        label=t.stack.local_label,
        tags=recipe.local_tags,
        source_date_epoch=epoch,
        elf_edits=ElfEdits.of(recipe),
    )
    if recipe.wheel_edits:
        fixed, _ = wheeledit.apply_to_repaired(
            fixed,
            add=recipe.add_requires,
            remove=recipe.remove_requires,
            update=recipe.update_requires,
            suffix=recipe.suffix,
        )
    return fixed
