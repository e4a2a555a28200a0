"""The CPU test planner and the interpretation of test outcomes, on constructed feature sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.targets import cputest
from builder.targets.cputest import (
    interpret,
    not_run,
    plan_cpu_test,
    qemu_binary,
)
from builder.targets.levels import level

V3 = level("x86-64-v3")
V4 = level("x86-64-v4")
V3_HOST = V3.features | {"adx", "sha_ni", "apic"}  # an AVX2 host with extras, no AVX-512
V4_HOST = V4.features | {"adx", "avx512ifma"}


def test_v3_runs_under_qemu_with_exactly_its_features() -> None:
    for host in (V3_HOST, V4_HOST, frozenset()):  # TCG emulates: the host's CPU does not matter
        plan = plan_cpu_test(V3, host, qemu_available=True)
        assert plan.mode == "qemu" and plan.exact and plan.runs
        assert plan.qemu_cpu == V3.qemu_cpu
        assert plan.reason.startswith(
            "under QEMU with exactly x86-64-v3's features, every process of the test ("
        )
        assert "static-pie" in plan.reason  # what escapes is said


def test_v4_is_not_run_on_a_host_without_avx512() -> None:
    plan = plan_cpu_test(V4, V3_HOST, qemu_available=True)
    assert plan.mode == "none" and not plan.runs and plan.qemu_cpu is None
    assert plan.reason.startswith("QEMU cannot emulate AVX-512 and this host lacks avx512bw, ")
    for f in ("avx512f", "avx512cd", "avx512dq", "avx512vl"):
        assert f in plan.reason
    assert "adx" not in plan.reason
    verdict = not_run(plan)
    assert verdict.status == "not-run" and not verdict.passed
    assert "QEMU cannot emulate AVX-512" in verdict.detail
    with pytest.raises(ValueError, match="nothing was run"):
        interpret(0, "", plan, V4)


def test_v4_runs_natively_on_a_host_with_avx512_and_says_it_proves_less() -> None:
    for qemu in (True, False):
        plan = plan_cpu_test(V4, V4_HOST, qemu_available=qemu)
        assert plan.mode == "native" and not plan.exact and plan.qemu_cpu is None
        assert plan.reason.startswith("natively on this host, which has x86-64-v4 and more (")
        assert "adx" in plan.reason and "avx512ifma" in plan.reason
        assert "a native run proves less than the exact level" in plan.reason
        assert "QEMU cannot emulate AVX-512" in plan.reason


def test_without_qemu_an_emulable_level_is_not_tested_even_on_a_richer_host() -> None:
    for host in (V3_HOST, V4_HOST, V3_HOST - {"avx2", "fma"}):
        plan = plan_cpu_test(V3, host, qemu_available=False)
        assert plan.mode == "none" and not plan.runs
        assert plan.reason == (
            "QEMU (qemu-x86_64-static) is not available: x86-64-v3 code is tested only under it"
        )
    why = "QEMU at /usr/bin/qemu-x86_64 is dynamically linked and cannot run inside the container"
    plan = plan_cpu_test(V3, V3_HOST, qemu_available=False, no_qemu=why)
    assert plan.mode == "none" and plan.reason.startswith(why)
    assert not_run(plan).detail.startswith("not run: QEMU at /usr/bin/qemu-x86_64 is dynamically")


def test_wrap() -> None:
    plan = plan_cpu_test(V3, V3_HOST, qemu_available=True)
    assert plan.wrap(["/venv/bin/python", "-c", "1"], Path("/usr/bin/qemu-x86_64-static")) == [
        "/usr/bin/qemu-x86_64-static",
        "-cpu",
        V3.qemu_cpu,
        "/venv/bin/python",
        "-c",
        "1",
    ]
    native = plan_cpu_test(V4, V4_HOST, qemu_available=True)
    assert native.wrap(["python"], "qemu") == ["python"]
    with pytest.raises(ValueError):
        plan_cpu_test(V4, V3_HOST, True).wrap(["python"], "qemu")


QEMU_PLAN = plan_cpu_test(V3, frozenset(), qemu_available=True)
NATIVE_PLAN = plan_cpu_test(V4, V4_HOST, qemu_available=True)


@pytest.mark.parametrize("code", [132, -4])
def test_sigill_exit_is_an_isa_leak(code: int) -> None:
    verdict = interpret(code, "", QEMU_PLAN, V3)
    assert verdict.status == "isa-leak" and not verdict.passed
    assert verdict.detail == (
        "SIGILL under an exact x86-64-v3 CPU: the wheel uses instructions above x86-64-v3"
    )


def test_illegal_instruction_text_is_an_isa_leak() -> None:
    out = "qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n"
    assert interpret(1, out, QEMU_PLAN, V3).status == "isa-leak"
    # QEMU's own report wins even when a test runner swallowed the child's exit code
    assert interpret(0, "...\n" + out, QEMU_PLAN, V3).status == "isa-leak"
    assert (
        interpret(2, "sh: line 1: 42 Illegal instruction  python t.py", QEMU_PLAN, V3).status
        == "isa-leak"
    )
    native = interpret(132, "", NATIVE_PLAN, V4)
    assert native.status == "isa-leak"
    assert native.detail.startswith("SIGILL natively on this host (which has all of x86-64-v4)")
    assert native.detail.endswith("above x86-64-v4")


def test_glibc_isa_note_refusal_is_an_isa_leak_even_when_skipped() -> None:
    out = (
        "ImportError: /v/site-packages/isafixture/_kernel.cpython-311-x86_64-linux-gnu.so: "
        "CPU ISA level is lower than required\n"
    )
    for code in (1, 0):  # 0: pytest.importorskip turned the ImportError into a skip
        verdict = interpret(code, "Traceback ...\n" + out, QEMU_PLAN, V3)
        assert verdict.status == "isa-leak"
        assert "ELF ISA note requires a level above x86-64-v3" in verdict.detail
        assert "_kernel.cpython-311-x86_64-linux-gnu.so" in verdict.detail


def test_pass_and_plain_failures() -> None:
    ok = interpret(0, "9.0\n", QEMU_PLAN, V3)
    assert ok.status == "passed" and ok.passed
    assert ok.detail == "passed " + QEMU_PLAN.reason
    native_ok = interpret(0, "", NATIVE_PLAN, V4)
    assert native_ok.passed and "proves less" in native_ok.detail
    failed = interpret(
        1, "collected 3 items\nE   AssertionError\n1 failed, 2 passed\n", QEMU_PLAN, V3
    )
    assert failed.status == "failed"
    assert failed.detail == (
        "tests failed under an exact x86-64-v3 CPU: exit code 1: 1 failed, 2 passed"
    )
    killed = interpret(-9, "", QEMU_PLAN, V3)
    assert killed.status == "failed" and "killed by SIGKILL" in killed.detail


def test_qemu_binary_prefers_the_static_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("qemu-x86_64", "qemu-x86_64-static"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert qemu_binary() == tmp_path / "qemu-x86_64-static"
    (tmp_path / "qemu-x86_64-static").unlink()
    found = qemu_binary()
    assert found is not None and found.name in cputest.QEMU_NAMES
