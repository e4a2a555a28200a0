"""A real ISA test, no container: the fixture built for x86-64-v3 and for x86-64-v4 with the host's
compiler, run under QEMU with exactly x86-64-v3's features.

The v3 build must pass; the v4 build must die with SIGILL and be called an ISA leak. A third build
records the level in the ELF ISA note (`-Wl,-z,x86-64-v4`): glibc then refuses the library with a
clear message instead of a later SIGILL.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.targets.cputest import (
    CpuTestPlan,
    interpret,
    plan_cpu_test,
    qemu_binary,
    raw_host_features,
)
from builder.targets.levels import Level, level

FIXTURE = Path(__file__).parent / "fixtures" / "isafixture"
V3 = level("x86-64-v3")
V4 = level("x86-64-v4")
PROBE = (
    "import sys; sys.path.insert(0, sys.argv[1]); import isafixture; "
    "print(isafixture.compiled_level()); print(isafixture.vector_sum([1.0] * 9 + [0.5] * 4))"
)
EXPECTED_SUM = "11.0"

pytestmark = [pytest.mark.integration]


def _skip_reason() -> str | None:
    if platform.machine() != "x86_64":
        return f"the fixture's kernels are x86-64 code; this machine is {platform.machine()}"
    # setuptools >= 70.1 carries bdist_wheel itself; the separate 'wheel' package is not needed.
    if importlib.util.find_spec("setuptools") is None or (
        importlib.util.find_spec("setuptools.command.bdist_wheel") is None
    ):
        return (
            "setuptools >= 70.1 (with bdist_wheel) not importable: the fixture is built with "
            "--no-build-isolation to stay offline (pip install -e '.[dev]')"
        )
    if not (shutil.which("gcc") or shutil.which("cc")):
        return "no C compiler (gcc or cc) on PATH"
    if qemu_binary() is None:
        return "qemu-x86_64-static is not installed (Debian: apt-get install qemu-user-static)"
    with open(os.path.realpath(sys.executable), "rb") as f:
        if f.read(4) != b"\x7fELF":
            return f"{sys.executable} is not an ELF executable QEMU can run"
    return None


_REASON = _skip_reason()
if _REASON:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


def _build(lv: Level, work: Path, isa_note: bool = False) -> Path:
    """Build the fixture's wheel for `lv` with the host compiler; unpack it; return the folder."""
    name = f"{lv.name}{'-note' if isa_note else ''}"
    src = work / f"src-{name}"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    env = {
        **os.environ,
        "CFLAGS": f"-O2 {lv.cflags()}",
        "LDFLAGS": (lv.ld_isa_flag or "") if isa_note else "",
    }
    wheels = work / f"wheels-{name}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("isafixture-0.1.0-*.whl")
    unpacked = work / f"site-{name}"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    return unpacked


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("isafixture")
    return {
        "v3": _build(V3, work),
        "v4": _build(V4, work),
        "v4-note": _build(V4, work, isa_note=True),
    }


def _run_under_v3(site: Path) -> tuple[int, str]:
    qemu = qemu_binary()
    assert qemu is not None
    plan = plan_cpu_test(V3, raw_host_features(), qemu_available=True)
    assert plan.mode == "qemu"
    argv = plan.wrap([sys.executable, "-c", PROBE, str(site)], qemu)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_v3_build_passes_under_an_exact_v3_cpu(built: dict[str, Path]) -> None:
    code, out = _run_under_v3(built["v3"])
    plan = plan_cpu_test(V3, frozenset(), qemu_available=True)
    verdict = interpret(code, out, plan, V3)
    assert verdict.status == "passed", out
    assert out.split()[:2] == ["x86-64-v3", EXPECTED_SUM]


def test_v4_build_dies_with_sigill_under_an_exact_v3_cpu(built: dict[str, Path]) -> None:
    code, out = _run_under_v3(built["v4"])
    assert code == -4, out  # qemu-user re-raises the guest's SIGILL on itself
    assert "Illegal instruction" in out
    verdict = interpret(code, out, plan_cpu_test(V3, frozenset(), qemu_available=True), V3)
    assert verdict.status == "isa-leak"
    assert verdict.detail == (
        "SIGILL under an exact x86-64-v3 CPU: the wheel uses instructions above x86-64-v3"
    )
    # from a shell, as in a container's test command, the same death is exit status 132
    qemu = qemu_binary()
    assert qemu is not None
    argv = plan_cpu_test(V3, frozenset(), True).wrap(
        [sys.executable, "-c", PROBE, str(built["v4"])], qemu
    )
    shell = subprocess.run(
        ["sh", "-c", '"$@"', "sh", *argv], capture_output=True, text=True, timeout=300
    )
    assert shell.returncode == 132
    assert (
        interpret(shell.returncode, shell.stderr, plan_cpu_test(V3, frozenset(), True), V3).status
        == "isa-leak"
    )


def test_v4_build_with_isa_note_is_refused_by_glibc(built: dict[str, Path]) -> None:
    code, out = _run_under_v3(built["v4-note"])
    assert code == 1, out
    assert "CPU ISA level is lower than required" in out
    verdict = interpret(code, out, plan_cpu_test(V3, frozenset(), True), V3)
    assert verdict.status == "isa-leak"
    assert "ELF ISA note requires a level above x86-64-v3" in verdict.detail


@pytest.mark.host_dependent
@pytest.mark.parametrize("name,lv", [("v3", V3), ("v4", V4), ("v4-note", V4)])
def test_builds_pass_natively_where_the_host_has_the_level(
    built: dict[str, Path], name: str, lv: Level
) -> None:
    host = raw_host_features()
    if not lv.features <= host:
        pytest.skip(f"this host lacks {', '.join(sorted(lv.features - host))}")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(built[name])], capture_output=True, text=True, timeout=120
    )
    verdict = interpret(
        proc.returncode,
        proc.stdout + proc.stderr,
        CpuTestPlan("native", None, f"natively on this host, which has {lv.name}"),
        lv,
    )
    assert verdict.status == "passed", proc.stdout + proc.stderr
    assert proc.stdout.split() == [lv.name, EXPECTED_SUM]
