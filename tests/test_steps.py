"""The in-container scripts, rendered by pure functions, run through a real shell."""

from __future__ import annotations

import subprocess

from builder.images.scripts import STEP_MARK, build_script, failed_step, wheel_test_script


def test_build_script_is_offline_and_in_tree() -> None:
    s = build_script("pkg-1.0.tar.gz", "pkg-1.0", ["setuptools>=40.8.0", "wheel"])
    assert "--no-index" in s and "--no-build-isolation" in s
    assert "cd /cbuild/src/pkg-1.0" in s
    assert "'setuptools>=40.8.0'" in s  # quoted for the shell
    assert subprocess.run(["sh", "-n", "-c", s]).returncode == 0


def test_test_script_marks_each_step_and_runs_the_tests_under_the_level() -> None:
    s = wheel_test_script(
        ["p-1.0-cp311-cp311-linux_x86_64.whl"],
        ["p", "p.sub"],
        ["python -c 'import p; assert p.f() == 3'"],
        ["numpy"],
        "qemu64,+avx2",
    )
    assert subprocess.run(["sh", "-n", "-c", s]).returncode == 0
    # install (native), level (the private binfmt_misc set up), 2 imports, 1 command, done
    assert s.count(STEP_MARK) == 6
    assert s.index(f"{STEP_MARK} install") < s.index(f"{STEP_MARK} level")
    assert "qemu64,+avx2" in s and "unshare -Urm" in s
    native = wheel_test_script(["p.whl"], ["p"], [], [], None)
    assert "qemu" not in native


def test_failed_step_names_the_last_marker() -> None:
    out = f"{STEP_MARK} install\nok\n{STEP_MARK} import Bio\nTraceback\n"
    assert failed_step(out) == "import Bio"
    assert failed_step("nothing") == "start"


def test_failure_excerpt_keeps_compiler_errors_and_tail() -> None:
    from builder.images.scripts import failure_excerpt

    log = "\n".join(["noise"] * 50 + ["src/k.c:3:1: error: expected ';'"] + ["pip"] * 50 + ["end"])
    text = failure_excerpt(log)
    assert "src/k.c:3:1: error: expected ';'" in text
    assert text.rstrip().endswith("end")
    assert "noise" not in text
