"""The cvmfs step environment, run for real on the miniature stack (tests/fixtures/cvmfs).

A copy of the stack is bound where the real one is (/cvmfs/soft.computecanada.ca, read-only),
mylib is built into it per level folder, and steps run through the real engine in an image with
Debian's Lmod, gcc and python3.11. This proves the mechanism (profile, RSNT_ARCH, module loading,
EBROOT* variables, the failure markers), not the real stack's ABI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import pytest

from builder.engines.base import Mount, RunResult, RunSpec
from builder.images.paths import IN_DIR
from builder.images.spec import BaseImage, ImageSpec
from builder.providers import cvmfs_env as cv
from builder.targets.cputest import raw_host_features
from builder.targets.levels import level
from builder.targets.model import Target, load_stack

pytestmark = [pytest.mark.integration]

STACK = load_stack("gentoo2023")
S = cv.settings(STACK)
FIXTURE = Path(__file__).parent / "fixtures" / "cvmfs"
# The miniature stack's gcc and python modules stand for the image's own: the image has them,
# and Debian's Lmod (the real stack ships its own Lmod; the miniature one has none).
PACKAGES = ("build-essential", "python3-dev", "lmod")


def target(lv: str = "generic", acc: str = "cpu") -> Target:
    return Target(STACK, lv, acc, "3.11", "cvmfs")


@pytest.fixture(scope="module")
def image(engine) -> str:
    prov = STACK.providers["standalone"]
    spec = ImageSpec(
        name="cvmfs-miniature",
        base=BaseImage(prov["base_image"], prov["distribution"], prov["suite"]),
        packages=PACKAGES,
        env=(("LC_ALL", "C.UTF-8"),),
        labels=(("org.cbuild.purpose", "tests: the miniature CVMFS stack"),),
    )
    return engine.build_image(spec, lambda _line: None)


@pytest.fixture(scope="module")
def host_mount(engine, image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the stack in a stand-in for the host's /cvmfs, with mylib built into it by
    the image's gcc (the same layout and paths as when bound read-only)."""
    host = tmp_path_factory.mktemp("cvmfs")
    host.chmod(0o755)  # world-readable as /cvmfs is: Apptainer's user reads it (pytest's is 0700)
    shutil.copytree(FIXTURE / S.host_repository(host).name, S.host_repository(host), symlinks=True)
    spec = RunSpec(
        image,
        ["sh", f"{IN_DIR}/build.sh", S.repository],
        mounts=(Mount(host, S.mount, read_only=False), Mount(FIXTURE / "mylib", IN_DIR)),
    )
    result = engine.run(spec, host.parent / "build-mylib.log")
    assert result.ok, result.output
    return host


def run_step(
    engine,
    image: str,
    host: Path,
    t: Target,
    script: str,
    modules: tuple[str, ...] = (),
    runtime_modules: tuple[str, ...] = (),
    step: Literal["build", "test"] = "build",
    env: dict[str, str] | None = None,
) -> RunResult:
    mods = cv.step_modules(t, S, modules, runtime_modules, step)
    spec = RunSpec(
        image,
        cv.command(cv.prologue(S, mods), script),
        mounts=(*cv.binds(S, host), Mount(FIXTURE / "mylib", IN_DIR)),
        env={**cv.environment(t, S), **(env or {})},
    )
    return engine.run(spec, host.parent / f"{t.id}.log")


def test_prologue_loads_the_stack_and_the_test_steps_modules(engine, image, host_mount) -> None:
    # A test step loads runtime_modules only: the build-only module that does not exist is
    # never asked for.
    script = (
        "echo CC=$CC EBROOTGCC=$EBROOTGCC EBROOTMYLIB=$EBROOTMYLIB\n"
        "echo python3=$(command -v python3) $(python3 -c 'import sys; print(sys.version[:4])')\n"
        "touch /cvmfs/soft.computecanada.ca/x 2>/dev/null && echo writable || echo read-only\n"
    )
    r = run_step(
        engine, image, host_mount, target(), script, ("nosuch/9",), ("mylib",), step="test"
    )
    assert r.ok, r.output
    assert "StdEnv/2023\ngcc/12\npython/3.11\nmylib/1.0\n" in r.output
    root = f"{S.repository}/easybuild/software/2023"
    assert f"CC=gcc EBROOTGCC=/usr EBROOTMYLIB={root}/x86-64-v3/Core/mylib/1.0\n" in r.output
    assert f"python3={root}/Core/python/3.11/bin/python3 3.11\n" in r.output
    assert "read-only\n" in r.output
    assert cv.failure(r.output, target(), S) is None


def test_a_missing_module_is_a_clear_error(engine, image, host_mount) -> None:
    r = run_step(engine, image, host_mount, target(), "echo SCRIPT-RAN\n", ("mylib", "nosuch/2.0"))
    assert not r.ok
    assert "SCRIPT-RAN" not in r.output
    # Lmod's own words (it wraps them to a terminal's width)
    assert 'The following module(s) are unknown: "nosuch/2.0"' in " ".join(r.output.split())
    err = cv.failure(r.output, target(), S)
    assert err is not None
    assert err.message == (
        "module nosuch/2.0 could not be loaded from the gentoo2023 stack at "
        "/cvmfs/soft.computecanada.ca (RSNT_ARCH=avx2, target gentoo2023-generic)"
    )


def test_the_profile_does_nothing_for_root_without_force(engine, image, host_mount) -> None:
    r = run_step(
        engine, image, host_mount, target(), "echo SCRIPT-RAN\n", env={"FORCE_CC_CVMFS": ""}
    )
    assert not r.ok and "SCRIPT-RAN" not in r.output
    err = cv.failure(r.output, target(), S)
    assert err is not None and "no `module` command after its profile" in err.message


def test_cuda_modules_are_hidden_without_a_driver(engine, image, host_mount) -> None:
    cpu = run_step(engine, image, host_mount, target(), "true\n", ("cuda/12",))
    err = cv.failure(cpu.output, target(), S)
    assert err is not None and err.message.startswith("module cuda/12 could not be loaded")
    gpu = target("x86-64-v3", "cuda12")
    r = run_step(engine, image, host_mount, gpu, "echo CUDA_HOME=$CUDA_HOME\n")
    assert r.ok, r.output
    assert "python/3.11\ncuda/12.4\n" in r.output  # cuda/12: Lmod's newest 12.x
    assert f"CUDA_HOME={S.repository}/easybuild/software/2023/Core/cudacore/12.4\n" in r.output


# A C extension built against mylib through its EBROOT variable only, linked with an RPATH as
# the stack's own packages are; `ldd` shows which level folder's library it found.
EXTENSION = f"""\
set -e
cd "$(mktemp -d)"
$CC -O2 -shared -fPIC $(python3-config --includes) {IN_DIR}/myext.c \\
    -I"$EBROOTMYLIB/include" -L"$EBROOTMYLIB/lib" -lmylib -Wl,-rpath,"$EBROOTMYLIB/lib" \\
    -o myext$(python3-config --extension-suffix)
ldd myext*.so | grep libmylib
if [ "$RUN_IT" = 1 ]; then
    python3 -c 'import myext; print("level", myext.level(), myext.add(2, 3))'
fi
"""


@pytest.mark.parametrize("lv,arch", [("x86-64-v3", "avx2"), ("x86-64-v4", "avx512")])
def test_rsnt_arch_selects_the_level_folder(engine, image, host_mount, lv, arch) -> None:
    t = target(lv)
    assert cv.environment(t, S)["RSNT_ARCH"] == arch
    r = run_step(engine, image, host_mount, t, EXTENSION, ("mylib",), env={"RUN_IT": "0"})
    assert r.ok, r.output
    lib = f"{S.repository}/easybuild/software/2023/{lv}/Core/mylib/1.0/lib/libmylib.so.1"
    assert f"libmylib.so.1 => {lib} " in r.output


@pytest.mark.host_dependent
@pytest.mark.parametrize("lv", ["x86-64-v3", "x86-64-v4"])
def test_the_extension_runs_with_the_levels_mylib(engine, image, host_mount, lv) -> None:
    missing = level(lv).features - raw_host_features()
    if missing:
        pytest.skip(f"this host lacks {', '.join(sorted(missing))}: {lv} code is not run here")
    r = run_step(engine, image, host_mount, target(lv), EXTENSION, ("mylib",), env={"RUN_IT": "1"})
    assert r.ok, r.output
    assert f"level {lv} 5\n" in r.output
