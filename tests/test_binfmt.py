"""The private binfmt_misc's pieces: the rule bytes, the launcher's arguments (a real compiled
launcher against a fake QEMU), the script that sets it up and the verdict when it cannot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from builder.images.scripts import under_level, wheel_test_script
from builder.targets import cputest
from builder.targets.binfmt import (
    RULES,
    UNAVAILABLE,
    launcher_argv,
    launcher_source,
)
from builder.targets.cputest import interpret, plan_cpu_test, usable_qemu
from builder.targets.levels import level

V3 = level("x86-64-v3")
CC = shutil.which("cc") or shutil.which("gcc")


def header(
    *, osabi: int = 0, e_type: int = 3, ph0: int = 6, machine: int = 0x3E, cls: int = 2
) -> bytes:
    h = bytearray(128)
    h[0:7] = bytes([0x7F, ord("E"), ord("L"), ord("F"), cls, 1, 1])
    h[7], h[16], h[18], h[64] = osabi, e_type, machine, ph0
    return bytes(h)


def matching(h: bytes) -> list[str]:
    return [r.name for r in RULES if r.matches(h)]


def test_rule_bytes_are_the_proven_registration() -> None:
    dyn = RULES[0].register("/tmp/bx/launch")
    magic = "\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01" + "\\x00" * 11 + "\\x3e" + "\\x00" * 45 + "\\x06"
    magic += "\\x00" * 3
    mask = "\\xff" * 7 + "\\x00" * 11 + "\\xff\\xff" + "\\x00" * 44 + "\\xff" * 4
    assert dyn == f":cbuild-dynamic:M:0:{magic}:{mask}:/tmp/bx/launch:PF"
    assert [len(r.magic) for r in RULES] == [68, 20, 20]
    for r in RULES:
        assert len(r.magic) == len(r.mask) and r.register("/l").endswith(":/l:PF")


def test_which_executables_each_rule_takes() -> None:
    assert matching(header(osabi=0, e_type=3, ph0=6)) == [  # a PIE linked dynamically
        "cbuild-dynamic",
        "cbuild-sysv",
    ]
    assert matching(header(osabi=3, e_type=2, ph0=6)) == ["cbuild-dynamic", "cbuild-static"]
    assert matching(header(osabi=0, e_type=2, ph0=1)) == ["cbuild-sysv", "cbuild-static"]  # Go
    assert matching(header(osabi=3, e_type=2, ph0=1)) == ["cbuild-static"]  # static glibc
    # static-pie glibc (the launcher, Debian's QEMU) and ld.so: nothing, or the kernel loops
    assert matching(header(osabi=3, e_type=3, ph0=1)) == []
    assert matching(header(osabi=0, machine=0xB7)) == []  # aarch64
    assert matching(header(osabi=0, cls=1)) == []  # 32-bit
    assert matching(b"#!/bin/sh\n") == []


def test_real_binaries_of_this_host() -> None:
    sh = Path("/bin/sh").resolve()  # a dynamically linked executable
    assert "cbuild-dynamic" in matching(sh.read_bytes()[:128])
    qemu, why = usable_qemu()
    if qemu is not None:
        assert matching(qemu.read_bytes()[:128]) == [], why


@pytest.mark.skipif(CC is None, reason="no C compiler (ci/setup.sh installs gcc)")
def test_static_pie_launcher_matches_no_rule(tmp_path: Path) -> None:
    src = tmp_path / "launcher.c"
    src.write_text(launcher_source("/cbuild/qemu/qemu-x86_64", V3.qemu_cpu))
    exe = tmp_path / "launcher"
    subprocess.run([CC, "-static-pie", "-O2", "-o", exe, src], check=True)
    assert matching(exe.read_bytes()[:128]) == []


@pytest.mark.skipif(CC is None, reason="no C compiler (ci/setup.sh installs gcc)")
def test_launcher_execs_qemu_with_the_level_and_argv0(tmp_path: Path) -> None:
    fake = tmp_path / "fake qemu"  # a space, to check nothing is split
    fake.write_text('#!/bin/sh\nfor a in "$0" "$@"; do echo "[$a]"; done\n')
    fake.chmod(0o755)
    src = tmp_path / "launcher.c"
    src.write_text(launcher_source(str(fake), V3.qemu_cpu))
    exe = tmp_path / "launcher"
    subprocess.run([CC, "-O2", "-o", exe, src], check=True)
    # what binfmt_misc with flag P passes: [launcher, FILE, ARGV0, ARGS...]
    binfmt = [str(exe), "/venv/bin/python", "python", "-c", "print(1)", "two words"]
    out = subprocess.run(binfmt, executable=exe, capture_output=True, text=True, check=True)
    expected = launcher_argv(str(fake), V3.qemu_cpu, binfmt)
    assert expected == [
        str(fake),
        "-cpu",
        V3.qemu_cpu,
        "-0",
        "python",
        "/venv/bin/python",
        "-c",
        "print(1)",
        "two words",
    ]
    assert out.stdout.splitlines() == [f"[{a}]" for a in expected]
    for bad in ([str(exe)], [str(exe), str(fake), "qemu"]):  # not from binfmt; QEMU itself
        res = subprocess.run(bad, executable=exe, capture_output=True, text=True)
        assert res.returncode == 127 and "not called by binfmt_misc" in res.stderr


def test_launcher_source_refuses_what_c_would_misread() -> None:
    with pytest.raises(ValueError):
        launcher_source('/q"; system("x', V3.qemu_cpu)
    with pytest.raises(ValueError):
        launcher_source("/q", "qemu64\n")


def test_test_script_installs_natively_then_runs_the_tests_at_the_level() -> None:
    script = wheel_test_script(["w.whl"], ["mod"], ["pytest -x"], [], V3.qemu_cpu)
    install, level_part = script.split("::cbuild-step:: level", 1)
    assert "pip --python /cbuild/testenv/bin/python install" in install
    assert "unshare" not in install and "import mod" not in install
    assert "unshare -Urm sh -c" in level_part and "mount -t binfmt_misc" in level_part
    assert "ulimit -c 0" in level_part and "cc -static-pie" in level_part
    assert level_part.index("import mod") < level_part.index("pytest -x")
    assert V3.qemu_cpu in level_part and "/cbuild/shim/python" not in script
    subprocess.run(["sh", "-n", "-c", script], check=True)
    native = wheel_test_script(["w.whl"], ["mod"], ["pytest -x"], [], None)
    assert "unshare" not in native and "qemu" not in native.lower()
    assert "export PATH=/cbuild/testenv/bin:$PATH" in native
    subprocess.run(["sh", "-n", "-c", native], check=True)


def test_every_setup_failure_prints_the_marker_and_exits_125() -> None:
    lines = under_level(V3.qemu_cpu, "true\n")
    script = "\n".join(lines)
    for what in ("no C compiler", "cc -static-pie", "unshare -Urm", "mount -t binfmt_misc"):
        assert what in script
    assert script.count(UNAVAILABLE) == 2  # the outer shell's `no` and the namespace's
    assert "exit 125" in script


def test_setup_failure_is_not_tested_with_reason_and_fix() -> None:
    plan = plan_cpu_test(V3, frozenset(), qemu_available=True)
    out = (
        "::cbuild-step:: level\n"
        f"{UNAVAILABLE} unshare -Urm (user and mount namespaces):  "
        "unshare: unshare failed: Operation not permitted\n"
    )
    verdict = interpret(125, out, plan, V3)
    assert verdict.status == "not-run" and not verdict.passed
    assert verdict.detail.startswith(
        "not tested: could not run every process under QEMU: unshare -Urm (user and mount "
        "namespaces): unshare: unshare failed: Operation not permitted; fix: "
    )
    assert "Linux >= 6.7" in verdict.detail


def test_usable_qemu_refuses_missing_and_dynamic_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cputest, "qemu_binary", lambda: None)
    qemu, why = usable_qemu()
    assert qemu is None and "not available" in why and "qemu-user-static" in why
    dynamic = tmp_path / "qemu-x86_64"
    shutil.copy(Path("/bin/sh").resolve(), dynamic)  # any dynamically linked ELF
    monkeypatch.setattr(cputest, "qemu_binary", lambda: dynamic)
    qemu, why = usable_qemu()
    assert qemu is None and "dynamically linked" in why
    plan = plan_cpu_test(V3, V3.features, qemu is not None, why)
    assert plan.mode == "none" and "dynamically linked" in plan.reason
