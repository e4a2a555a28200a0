"""`cbuild doctor`: each problem planted in a test's home folder and environment is found, with
its fix; a missing engine the configuration names makes it exit 1. QEMU runs a real v3 program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from builder.workflows.doctor import V3_CODE, environment_checks, level_program


def plant(home: Path) -> dict[str, str]:
    site = home / ".local" / "lib" / "python3.11" / "site-packages"
    (site / "numpy-1.26.4.dist-info").mkdir(parents=True)
    (site / "numpy").mkdir()
    wheels = home / ".cache" / "pip" / "wheels" / "ab" / "cd"
    wheels.mkdir(parents=True)
    (wheels / "biopython-1.85-cp311-cp311-linux_x86_64.whl").write_bytes(b"PK")
    conf = home / ".config" / "pip"
    conf.mkdir(parents=True)
    (conf / "pip.conf").write_text("[global]\nindex-url = https://example.org/simple\n")
    return {
        "HOME": str(home),
        "PYTHONPATH": "/home/me/lib",
        "PIP_INDEX_URL": "https://example.org/simple",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",  # harmless: not reported
    }


def test_each_planted_problem_is_found_with_its_fix(tmp_path: Path) -> None:
    env = plant(tmp_path)
    found = {c.detail.split(" ")[0]: c for c in environment_checks(tmp_path, env)}
    assert all(c.state == "warn" and c.fix for c in found.values())
    local = next(c for c in found.values() if "pip --user" in c.detail)
    assert "numpy-1.26.4" in local.detail and "pip uninstall numpy" in local.fix
    assert found["PYTHONPATH=/home/me/lib"].fix.startswith("unset PYTHONPATH ")
    assert found["PIP_INDEX_URL=https://example.org/simple"].fix == "unset PIP_INDEX_URL"
    assert not any("PIP_DISABLE" in d for d in found)
    cache = next(c for c in found.values() if "pip's cache" in c.detail)
    assert "biopython" in cache.detail and "--no-cache-dir" in cache.fix
    assert any("pip.conf exists" in c.detail for c in found.values())
    userbase = environment_checks(tmp_path / "x", {"PYTHONUSERBASE": "/u"})
    assert [c.fix.split(" (")[0] for c in userbase] == ["unset PYTHONUSERBASE"]
    clean = environment_checks(tmp_path / "empty", {"HOME": str(tmp_path / "empty")})
    assert [c.state for c in clean] == ["ok"]


def test_the_v3_program_is_a_real_program(tmp_path: Path) -> None:
    prog = tmp_path / "v3"
    prog.write_bytes(level_program(b""))  # only the exit: runs on any x86-64
    prog.chmod(0o755)
    assert subprocess.run([str(prog)]).returncode == 0
    prog.write_bytes(level_program(V3_CODE))
    assert subprocess.run(["qemu-x86_64-static", "-cpu", "qemu64", str(prog)]).returncode != 0


def test_cli_reports_them_and_exits_1_when_the_engine_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CBUILD_"))}
    env.update(plant(tmp_path))
    env["CBUILD_CACHE"] = str(tmp_path / "cache")
    env["PATH"] = "/usr/bin:/bin"  # no apptainer
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "builder", "doctor", *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    env["CBUILD_ENGINE"] = "apptainer"
    res = run("--json")
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is False
    missing = [c for c in out["checks"] if c["state"] == "missing" and c["needed"]]
    assert [c["detail"] for c in missing] == ["no apptainer on PATH"]
    assert "Apptainer" in missing[0]["fix"]
    qemu = next(c for c in out["checks"] if c["area"] == "qemu")
    assert qemu["state"] == "ok" and "runs at exactly v3" in qemu["detail"]
    warned = " ".join(c["detail"] for c in out["checks"] if c["state"] == "warn")
    for problem in ("pip --user", "PYTHONPATH=", "PIP_INDEX_URL=", "pip's cache", "pip.conf"):
        assert problem in warned
    text = run()
    assert text.returncode == 1
    assert "missing engine: no apptainer on PATH" in " ".join(text.stderr.split())
    assert "fix: unset PYTHONPATH" in text.stderr
