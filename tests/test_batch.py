"""Batch files, task plans, the Slurm array script and the reading of Slurm's answers: pure
logic, no engine and no Slurm (tests/test_slurm_integration.py runs the real thing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import builder
from builder.cli.app import app
from builder.errors import ConfigError, FetchError
from builder.pipeline.model import RunReport, TargetResult
from builder.providers import unbuildable
from builder.targets.model import all_targets, resolve
from builder.workflows import slurm
from builder.workflows.batch import (
    BatchEntry,
    BatchFileError,
    Task,
    github_matrix,
    parse_batch,
    plan_tasks,
    read_batch,
    run_local,
)

# No targets on a line: every target the provider can build here (3.12 only with its source).
ALL = tuple(t.id for t in all_targets() if t not in unbuildable(all_targets()))
GOOD = """\
# the site's weekly list
biopython==1.85 gentoo2023-x86-64-v3 gentoo2023-x86-64-v4

six==1.16.0   # every target
Django==4.2.11 gentoo2023-generic
"""


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigError) as exc:
        parse_batch(text, "list.txt")
    return exc.value.errors if isinstance(exc.value, BatchFileError) else [exc.value]


# --- the batch file ---------------------------------------------------------------------------


def test_parse_lines_targets_comments_and_line_numbers() -> None:
    entries = parse_batch(GOOD, "list.txt")
    assert [(e.package, e.version, e.line) for e in entries] == [
        ("biopython", "1.85", 2),
        ("six", "1.16.0", 4),
        ("Django", "4.2.11", 5),
    ]
    assert entries[0].target_ids == ("gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4")
    assert entries[1].target_ids == ALL  # none given: every target
    assert entries[2].target_ids == ("gentoo2023-generic",)
    assert entries[0].spec == "biopython==1.85"


def test_every_bad_line_is_reported_with_file_line_and_fix() -> None:
    errs = errors_of(
        "six>=1.0\n"
        "idna == 3.7\n"
        "biopython==1.85 gentoo2023-x86-64-v9\n"
        "numpy[extra]==1.26.4\n"
        "foo==not-a-version\n"
        "https://example.org/x.tar.gz\n"
    )
    by_line = {int(e.message.split(":")[1]): e for e in errs}
    assert sorted(by_line) == [1, 2, 3, 4, 5, 6]
    assert all(e.message.startswith("list.txt:") and e.fix for e in errs)
    assert "does not pin one version" in by_line[1].message
    assert by_line[1].fix == "write six==VERSION"
    assert by_line[2].fix == "write it without spaces: idna==3.7"
    # the target error is targets.resolve's own message and fix, with the place added
    with pytest.raises(ConfigError) as unknown:
        resolve(["gentoo2023-x86-64-v9"])
    assert by_line[3].message == f"list.txt:3: {unknown.value.message}"
    assert by_line[3].fix == unknown.value.fix and "gentoo2023-x86-64-v4" in by_line[3].fix
    assert "extras, markers and URLs" in by_line[4].message
    assert "'not-a-version' is not a valid version" in by_line[5].message
    assert "is not a requirement" in by_line[6].message


def test_a_version_listed_twice_is_an_error_naming_the_first_line() -> None:
    (err,) = errors_of("six==1.16\n# again, spelled differently\nSix==1.16.0 gentoo2023-generic\n")
    assert err.message == "list.txt:3: Six==1.16.0 is listed on line 1 already"
    assert "all its targets on that line" in err.fix
    # two versions of one package are two builds
    assert len(parse_batch("six==1.16.0\nsix==1.17.0\n")) == 2


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (err,) = errors_of("# nothing yet\n\n")
    assert "no packages listed" in err.message and "==" in err.fix
    with pytest.raises(ConfigError, match="no such file"):
        read_batch(tmp_path / "nope.txt")


def test_github_matrix_is_one_job_per_package_and_target() -> None:
    entries = parse_batch("six==1.16.0 gentoo2023-generic\nidna==3.7\n")
    matrix = github_matrix(entries)
    assert matrix["include"][0] == {
        "package": "six",
        "version": "1.16.0",
        "target": "gentoo2023-generic",
    }
    assert [j["target"] for j in matrix["include"][1:]] == list(ALL)
    assert {j["package"] for j in matrix["include"][1:]} == {"idna"}


def test_cli_matrix_prints_one_line(tmp_path: Path) -> None:
    batch = tmp_path / "list.txt"
    batch.write_text(GOOD)
    res = CliRunner().invoke(app, ["batch", str(batch), "--matrix", "github"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("\n") == 1
    assert json.loads(res.stdout) == github_matrix(parse_batch(GOOD))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "x"], "--partition: only with --slurm"),
        (["--dry-run"], "--dry-run: only with --slurm"),
        (["--slurm", "--jobs", "2"], "--cpus-per-task"),
        (["--slurm", "--matrix", "github"], "does not go with --slurm"),
        (["--matrix", "gitlab"], "unknown matrix format"),
    ],
)
def test_cli_refuses_options_that_do_not_go_together(
    tmp_path: Path, args: list[str], message: str
) -> None:
    batch = tmp_path / "list.txt"
    batch.write_text(GOOD)
    res = CliRunner().invoke(app, ["batch", str(batch), *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_cli_bad_file_exits_2_without_markup_loss(tmp_path: Path) -> None:
    batch = tmp_path / "list.txt"
    batch.write_text("numpy[extra]==1.26.4\n")
    res = CliRunner().invoke(app, ["batch", str(batch), "--matrix", "github"])
    assert res.exit_code == 2
    assert "'numpy[extra]==1.26.4'" in res.stderr  # brackets are not eaten as rich markup


# --- tasks and the array script ----------------------------------------------------------------


def test_one_task_per_package_version_with_its_targets() -> None:
    tasks = plan_tasks(parse_batch(GOOD))
    assert [(t.index, t.package, t.targets) for t in tasks] == [
        (0, "biopython", ("gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4")),
        (1, "six", ALL),
        (2, "Django", ("gentoo2023-generic",)),
    ]


def job_for(tmp_path: Path, tasks: list[Task], **kw: object) -> slurm.BatchJob:
    folder = tmp_path / "cache" / "batches" / "20250101-000000-abcdef"
    defaults: dict[str, object] = {
        "id": "20250101-000000-abcdef",
        "folder": folder,
        "source": tmp_path / "list.txt",
        "tasks": tuple(tasks),
        "python": sys.executable,
        "code_root": Path(builder.__file__).resolve().parent.parent,
        "wheelhouse": tmp_path / "wheelhouse",
        "recipes": (tmp_path / "recipes",),
        "cache": tmp_path / "cache",
        "env": (("CBUILD_CACHE", str(tmp_path / "cache")), ("DOCKER_HOST", "unix:///x y.sock")),
    }
    defaults.update(kw)
    return slurm.BatchJob(**defaults)  # type: ignore[arg-type]


def check_shell(text: str, tmp_path: Path) -> None:
    script = tmp_path / "batch.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    here = str(Path(sys.executable).parent)
    shellcheck = shutil.which("shellcheck", path=here) or shutil.which("shellcheck")
    if shellcheck:  # the dev extra brings it; bash -n above is the floor
        proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_script_is_one_array_with_a_task_per_package(tmp_path: Path) -> None:
    job = job_for(
        tmp_path,
        plan_tasks(parse_batch(GOOD)),
        options=slurm.SlurmOptions("short", "1:00:00", 2, "8G"),
        wheel_flags=("--rebuild",),
    )
    text = slurm.render_script(job)
    check_shell(text, tmp_path)
    directives = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert directives == [
        f"#SBATCH --job-name=cbuild-{job.id}",
        "#SBATCH --array=0-2",
        f"#SBATCH --output={job.folder}/tasks/%a.log",
        f"#SBATCH --chdir={job.folder}",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --partition=short",
        "#SBATCH --time=1:00:00",
        "#SBATCH --mem=8G",
    ]
    assert text.startswith("#!/bin/bash\n")
    # per task: its package, version and targets; as many targets at once as it has CPUs
    assert (
        "  1) args=(six 1.16.0 --target gentoo2023-generic --target gentoo2023-x86-64-v3 " in text
    )
    assert "--target gentoo2023-x86-64-v4 --jobs 2) ;;" in text
    assert "  2) args=(Django 4.2.11 --target gentoo2023-generic --jobs 1) ;;" in text
    assert f"{sys.executable} -m builder wheel " in text
    assert f"--wheelhouse {tmp_path}/wheelhouse --recipes {tmp_path}/recipes" in text
    assert "--rebuild --json" in text
    assert "export DOCKER_HOST='unix:///x y.sock'" in text
    assert f"export PYTHONPATH={job.code_root}$" in text


def test_script_without_options_has_defaults_only(tmp_path: Path) -> None:
    text = slurm.render_script(
        job_for(tmp_path, [Task(0, "six", "1.16.0", ("gentoo2023-generic",))])
    )
    assert "#SBATCH --array=0-0" in text and "--jobs 1)" in text
    assert "--partition" not in text and "--time" not in text and "--mem" not in text


def test_script_paths_with_spaces_and_percent(tmp_path: Path) -> None:
    base = tmp_path / "my 100% cache"
    job = job_for(tmp_path, [Task(0, "six", "1.16.0", ("gentoo2023-generic",))], folder=base / "b")
    text = slurm.render_script(job)
    check_shell(text, tmp_path)
    assert f'#SBATCH --output="{tmp_path}/my 100%% cache/b/tasks/%a.log"' in text
    with pytest.raises(ConfigError, match="cannot be written in an #SBATCH line"):
        slurm.render_script(job_for(tmp_path, job.tasks, folder=tmp_path / 'a"b'))


def test_script_runs_a_task_and_records_its_exit_status(tmp_path: Path) -> None:
    """The real script under bash with the real cbuild: a task whose target is unknown fails
    fast (no engine needed), and leaves its exit status, an empty report and a log."""
    job = job_for(
        tmp_path,
        [Task(0, "six", "1.16.0", ("gentoo2023-generic",)), Task(1, "six", "1.16.0", ("nope",))],
    )
    tasks = job.folder / "tasks"
    tasks.mkdir(parents=True)
    job.script.write_text(slurm.render_script(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}

    def run(task_id: str | None) -> subprocess.CompletedProcess[str]:
        extra = {"SLURM_ARRAY_TASK_ID": task_id} if task_id is not None else {}
        return subprocess.run(
            ["bash", str(job.script)],
            env={**env, **extra},
            cwd=job.folder,
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = run("1")
    assert res.returncode == 2, res.stderr
    assert (tasks / "1.rc").read_text() == "2\n"
    assert (tasks / "1.json").read_text() == ""
    assert "unknown target id 'nope'" in res.stderr
    assert not (tasks / "1.json.part").exists()
    res = run("7")
    assert res.returncode == 2 and "has no task 7" in res.stderr
    res = run(None)
    assert res.returncode != 0 and "submit this script with sbatch" in res.stderr


def test_cli_dry_run_prints_the_script_and_writes_nothing(tmp_path: Path) -> None:
    batch = tmp_path / "list.txt"
    batch.write_text("six==1.16.0 gentoo2023-generic\nidna==3.7 gentoo2023-generic\n")
    cache = tmp_path / "cache"
    res = CliRunner().invoke(
        app,
        ["batch", str(batch), "--slurm", "--dry-run", "--cache", str(cache), "--time", "30"],
        env={"DOCKER_HOST": "unix:///run/podman/podman.sock"},
    )
    assert res.exit_code == 0, res.output
    check_shell(res.stdout, tmp_path)
    assert "#SBATCH --array=0-1" in res.stdout and "#SBATCH --time=30" in res.stdout
    assert "export DOCKER_HOST=unix:///run/podman/podman.sock" in res.stdout
    assert f"export CBUILD_CACHE={cache.resolve()}" in res.stdout
    assert not cache.exists()


def test_passed_env_takes_the_engine_and_cbuild_settings(tmp_path: Path) -> None:
    env = slurm.passed_env(
        {"DOCKER_HOST": "unix:///s", "CBUILD_PYPI_URL": "https://m", "HOME": "/root"},
        tmp_path,
    )
    assert dict(env) == {
        "DOCKER_HOST": "unix:///s",
        "CBUILD_PYPI_URL": "https://m",
        "CBUILD_CACHE": str(tmp_path),
    }


def test_batch_ids_sort_by_time() -> None:
    a = slurm.new_batch_id(datetime(2025, 1, 2, 3, 4, 5), "x")
    b = slurm.new_batch_id(datetime(2025, 1, 2, 3, 4, 6), "x")
    assert a.startswith("20250102-030405-") and a < b
    assert slurm.new_batch_id(datetime(2025, 1, 2, 3, 4, 5), "y") != a


# --- Slurm's answers ---------------------------------------------------------------------------

# A real `scontrol -o show job` line of this project's single-node Slurm (shortened), and a
# pending array's remainder as one line.
SCONTROL = (
    "JobId=6 ArrayJobId=6 ArrayTaskId=2 JobName=cbuild-x UserId=root(0) JobState=COMPLETED "
    "Reason=None Dependency=(null) ExitCode=0:0 RunTime=00:00:09 "
    "Command=/tmp/my batches/batch.sh\n"
    "JobId=7 ArrayJobId=6 ArrayTaskId=1 JobState=FAILED Reason=NonZeroExitCode ExitCode=5:0\n"
    "JobId=8 ArrayJobId=6 ArrayTaskId=0 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15\n"
    "JobId=6 ArrayJobId=6 ArrayTaskId=3-5%2 JobState=PENDING Reason=JobArrayTaskLimit "
    "ExitCode=0:0\n"
)


def test_parse_scontrol() -> None:
    got = slurm.parse_scontrol(SCONTROL)
    assert got[2] == slurm.SlurmTaskState("COMPLETED", 0, "")
    assert got[1] == slurm.SlurmTaskState("FAILED", 5, "NonZeroExitCode")
    assert got[0].exit_code == 128 + 15  # killed by a signal, as a shell reports it
    assert got[3] == got[5] == slurm.SlurmTaskState("PENDING", 0, "JobArrayTaskLimit")


def test_parse_sacct_and_squeue() -> None:
    sacct = (
        "41_0|COMPLETED|0:0\n41_1|CANCELLED by 0|0:15\n41_[2-3,5]|PENDING|0:0\n"
        "410_0|FAILED|1:0\n"  # another job whose id starts alike
    )
    got = slurm.parse_sacct(sacct, "41")
    assert got[0] == slurm.SlurmTaskState("COMPLETED", 0)
    assert got[1].state == "CANCELLED"
    assert sorted(got) == [0, 1, 2, 3, 5]
    q = slurm.parse_squeue("0|RUNNING|None\n4|PENDING|Resources\n")
    assert q == {
        0: slurm.SlurmTaskState("RUNNING", None, ""),
        4: slurm.SlurmTaskState("PENDING", None, "Resources"),
    }


@pytest.mark.parametrize(
    ("state", "rc", "expected"),
    [
        ("PENDING", None, "pending"),
        ("RUNNING", None, "running"),
        ("COMPLETING", 0, "running"),  # Slurm has not let go of it yet
        ("REQUEUED", 1, "pending"),  # an old attempt's status does not count
        ("COMPLETED", 0, "completed"),
        ("FAILED", 5, "failed"),
        (None, 0, "completed"),  # Slurm forgot it (no accounting): the task's own word
        (None, 7, "failed"),
        ("TIMEOUT", None, "failed"),  # killed before it could write a status
        ("COMPLETED", None, "completed"),
        (None, None, "unknown"),
    ],
)
def test_classify(state: str | None, rc: int | None, expected: str) -> None:
    got = slurm.classify(slurm.SlurmTaskState(state) if state else None, rc)
    assert got == expected


def test_describe_reads_the_task_report() -> None:
    ok = {"ok": True, "targets": [{"status": "tested"}], "placed": ["/w/generic/a.whl"]}
    assert slurm.describe("completed", None, 0, ok) == "placed 1 wheel(s)"
    same = {"ok": True, "targets": [{"status": "up to date"}], "placed": ["x"]}
    assert slurm.describe("completed", None, 0, same) == "up to date"
    bad = {"ok": False, "error": "gentoo2023-generic: build-failed: exit 1"}
    assert slurm.describe("failed", None, 5, bad) == bad["error"]
    timeout = slurm.SlurmTaskState("TIMEOUT", 143)
    assert slurm.describe("failed", timeout, None, None) == "TIMEOUT, exit ?: see the log"
    waiting = slurm.SlurmTaskState("PENDING", None, "Resources")
    assert slurm.describe("pending", waiting, None, None) == "Resources"


def test_records_by_id_job_id_and_latest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no batches"):
        slurm.load_record(tmp_path, None)
    for bid, job, created in [
        ("b-old", "11", "2025-01-01T10:00:00"),
        ("b-new", "12", "2025-01-02T09:00:00"),
    ]:
        folder = slurm.batches_dir(tmp_path) / bid
        folder.mkdir(parents=True)
        (folder / "batch.json").write_text(
            json.dumps({"id": bid, "job_id": job, "created": created, "tasks": []})
        )
    assert slurm.load_record(tmp_path, None)["id"] == "b-new"
    assert slurm.load_record(tmp_path, "b-old")["job_id"] == "11"
    assert slurm.load_record(tmp_path, "11")["id"] == "b-old"
    with pytest.raises(ConfigError) as exc:
        slurm.load_record(tmp_path, "b-nope")
    assert "b-new" in exc.value.fix


def test_cli_status_without_batches(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["batch", "status", "--cache", str(tmp_path)])
    assert res.exit_code == 2 and "no batches in" in res.stderr
    res = CliRunner().invoke(app, ["batch", "status", "x", "--latest", "--cache", str(tmp_path)])
    assert res.exit_code == 2 and "not both" in res.stderr


# --- local runs ----------------------------------------------------------------------------------


def report(entry: BatchEntry, status: str, ok: bool) -> RunReport:
    results = [TargetResult(t, status=status) for t in entry.targets]
    return RunReport(
        entry.package, entry.version, results, [], [], Path("/w"), ok, None if ok else "x"
    )


def test_run_local_goes_on_past_failures_and_reports_each() -> None:
    entries = parse_batch(
        "a==1 gentoo2023-generic\nb==1 gentoo2023-generic\nc==1 gentoo2023-generic\n"
        "d==1 gentoo2023-generic\n"
    )

    def build(e: BatchEntry) -> RunReport:
        if e.package == "a":
            raise FetchError("no version 1 of a on PyPI", fix="nearest versions: 2")
        if e.package == "b":
            return report(e, "failed", ok=False)
        return report(e, "up to date" if e.package == "c" else "tested", ok=True)

    got = list(run_local(entries, build))
    assert [(o.entry.package, o.state, o.exit_code) for o in got] == [
        ("a", "failed", 3),
        ("b", "failed", 7),
        ("c", "up to date", 0),
        ("d", "ok", 0),
    ]
    assert got[0].fix == "nearest versions: 2" and got[0].as_dict()["report"] is None
    assert got[3].as_dict()["report"]["ok"] is True
