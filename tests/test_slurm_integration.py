"""`cbuild batch --slurm` against a real single-node Slurm (slurmctld + slurmd + munge, started
by ci/slurm-setup.sh), real array tasks running the real `cbuild wheel` through the real engine,
and sdists from the real PyPI; and, last, the same kind of list built here without Slurm.

Skipped with the reason where Slurm cannot be started (not root, no Debian packages), except
where CI demands it (CBUILD_REQUIRE_SLURM=1): there that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.network]

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "ci" / "slurm-setup.sh"
TARGET = "gentoo2023-generic"
# Small pure-Python sdists with three build styles: setup.py only (six), setuptools with
# setup.cfg (decorator), and a pyproject build backend fetched as a build requirement
# (colorama: hatchling). Each builds offline from its declared build requirements.
PACKAGES = [("six", "1.16.0"), ("decorator", "5.1.1"), ("colorama", "0.4.6")]
WAIT_S = 15 * 60


def _unavailable(reason: str) -> None:
    if os.environ.get("CBUILD_REQUIRE_SLURM") == "1":
        pytest.fail(f"CBUILD_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A Slurm that takes jobs: the one already running, or one started by the setup script."""
    if subprocess.run(["bash", str(SETUP), "status"], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        _unavailable("Slurm is not running and ci/slurm-setup.sh start needs root")
    proc = subprocess.run(
        ["bash", str(SETUP), "start"], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        _unavailable(f"ci/slurm-setup.sh start failed (exit {proc.returncode}):\n{tail}")


def cbuild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def wait_for(batch: str, cache: Path, job_id: str) -> dict[str, Any]:
    """`cbuild batch status --json` once every task has ended; the job is cancelled on a
    timeout so that nothing is left running."""
    deadline = time.monotonic() + WAIT_S
    while True:
        res = cbuild("batch", "status", batch, "--cache", str(cache), "--json")
        assert res.returncode in (0, 1), res.stderr
        report = json.loads(res.stdout)
        if report["done"]:
            return report
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id], check=False)
            pytest.fail(f"batch {batch} not done after {WAIT_S} s: {json.dumps(report)}")
        time.sleep(3)


def logs_of(report: dict[str, Any]) -> str:
    out = []
    for t in report["tasks"]:
        log = Path(t["log"])
        text = log.read_text() if log.is_file() else "(no log)"
        out.append(f"--- task {t['index']} {t['package']}: {t['state']}\n{text[-3000:]}")
    return "\n".join(out)


def submit(tmp_path: Path, lines: list[str]) -> tuple[dict[str, Any], Path, Path]:
    batch_file = tmp_path / "list.txt"
    batch_file.write_text("# cbuild batch integration test\n" + "\n".join(lines) + "\n")
    cache, wheelhouse = tmp_path / "cache", tmp_path / "wheelhouse"
    res = cbuild(
        "batch",
        str(batch_file),
        "--slurm",
        "--time",
        "30:00",
        "--cache",
        str(cache),
        "--wheelhouse",
        str(wheelhouse),
        "--json",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout), cache, wheelhouse


def test_three_package_batch_runs_to_completion(
    slurm_cluster: None, engine: object, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    submitted, cache, wheelhouse = submit(tmp_path, [f"{p}=={v} {TARGET}" for p, v in PACKAGES])
    assert submitted["job_id"].isdigit()
    assert len(submitted["tasks"]) == 3
    script = Path(submitted["script"])
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    report = wait_for(submitted["id"], cache, submitted["job_id"])
    elapsed = time.monotonic() - t0
    print(f"three-package Slurm batch: {elapsed:.0f} s from submission to the last task")

    assert [t["state"] for t in report["tasks"]] == ["completed"] * 3, logs_of(report)
    assert report["counts"] == {"completed": 3}
    for t, (package, version) in zip(report["tasks"], PACKAGES, strict=True):
        assert (t["package"], t["version"], t["targets"]) == (package, version, [TARGET])
        assert t["exit_code"] == 0 and t["detail"] == "placed 1 wheel(s)"
        task_report = json.loads(Path(t["report"]).read_text())
        assert task_report["ok"] and task_report["targets"][0]["status"] == "tested"
        assert f"task {t['index']} on " in Path(t["log"]).read_text()
        # pure wheels: in the pure folder, with the site's label and their manifest
        (wheel,) = (wheelhouse / "generic").glob(f"{package}-{version}+computecanada-*.whl")
        assert Path(f"{wheel}.json").is_file()
        assert task_report["placed"] == [str(wheel)]

    # --latest and the default name the same batch; the text form ends with the counts
    latest = cbuild("batch", "status", "--latest", "--cache", str(cache))
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.strip() == f"{submitted['id']}: 3 completed"


def test_a_failing_task_is_reported_failed_with_its_log(
    slurm_cluster: None, engine: object, tmp_path: Path
) -> None:
    # A version that does not exist fails at the PyPI lookup: the cheapest real failure.
    submitted, cache, _ = submit(tmp_path, [f"six==0.0.1 {TARGET}"])
    report = wait_for(submitted["id"], cache, submitted["job_id"])
    (task,) = report["tasks"]
    assert task["state"] == "failed", logs_of(report)
    assert task["exit_code"] == 3  # FetchError's exit code, from the task itself
    assert "no version 0.0.1 of six" in Path(task["log"]).read_text()
    res = cbuild("batch", "status", submitted["id"], "--cache", str(cache))
    assert res.returncode == 1


def test_local_batch_goes_on_past_a_failure(engine: object, tmp_path: Path) -> None:
    batch_file = tmp_path / "list.txt"
    batch_file.write_text(f"six==0.0.1 {TARGET}\nsix==1.16.0 {TARGET}\n")
    args = ["batch", str(batch_file), "--cache", str(tmp_path / "cache")]
    res = cbuild(*args, "--wheelhouse", str(tmp_path / "wheelhouse"), "--json")
    assert res.returncode == 1, res.stderr
    result = json.loads(res.stdout)
    assert [(p["version"], p["state"], p["exit_code"]) for p in result["packages"]] == [
        ("0.0.1", "failed", 3),
        ("1.16.0", "ok", 0),
    ]
    assert "no version 0.0.1 of six" in result["packages"][0]["error"]
    assert list((tmp_path / "wheelhouse" / "generic").glob("six-1.16.0+computecanada-*.whl"))
    # again: the built one is up to date, without a container
    res = cbuild(*args, "--wheelhouse", str(tmp_path / "wheelhouse"), "--json")
    assert [p["state"] for p in json.loads(res.stdout)["packages"]] == ["failed", "up to date"]
