"""`cbuild batch --slurm`: one Slurm job array for a batch file, and its status.

Each array task runs `cbuild wheel` for one package version (see batch.Task) with the
interpreter and the code that submitted it. Everything a batch leaves lies in one folder,
`<cache>/batches/<id>/`: the script (batch.sh), the record (batch.json), and per task its log
(tasks/<i>.log: Slurm's output file), its `--json` report (tasks/<i>.json) and its exit status
(tasks/<i>.rc). The folder must be on a file system the compute nodes share, as the cache and
the wheelhouse must be.

Rendering and parsing are pure; `submit` and `query` run the real sbatch/squeue/sacct/scontrol.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.errors import CbuildError, ConfigError
from builder.files import write_atomic
from builder.pipeline.model import Status
from builder.workflows.batch import Task


class SlurmError(CbuildError):
    """Slurm's commands are missing, or Slurm refused the job."""

    exit_code = 4


# What a task needs to reach the same engine as the submitter, whatever the site's sbatch
# --export default is. Every CBUILD_* variable goes too (index URL, CA bundle, cache).
PASSED_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "CONTAINERS_CONF")

PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int = 1
    mem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "time": self.time,
            "cpus_per_task": self.cpus_per_task,
            "mem": self.mem,
        }


@dataclass(frozen=True)
class BatchJob:
    """Everything the array script says, decided before anything is written."""

    id: str
    folder: Path
    source: Path
    tasks: tuple[Task, ...]
    python: str
    code_root: Path  # the folder holding the `builder` package that submitted
    wheelhouse: Path
    recipes: tuple[Path, ...]  # the site's folders; each task searches the built-in ones last
    cache: Path
    options: SlurmOptions = field(default_factory=SlurmOptions)
    wheel_flags: tuple[str, ...] = ()  # --force / --strict / --rebuild, passed through
    env: tuple[tuple[str, str], ...] = ()

    @property
    def script(self) -> Path:
        return self.folder / "batch.sh"

    def log(self, index: int) -> Path:
        return self.folder / "tasks" / f"{index}.log"

    def report(self, index: int) -> Path:
        return self.folder / "tasks" / f"{index}.json"

    def jobs(self, task: Task) -> int:
        """The task's targets at once: as many as it has CPUs for."""
        return max(1, min(self.options.cpus_per_task, len(task.targets)))

    def task_args(self, task: Task) -> list[str]:
        targets = [a for t in task.targets for a in ("--target", t)]
        return [task.package, task.version, *targets, "--jobs", str(self.jobs(task))]

    def common_args(self) -> list[str]:
        return [
            "--wheelhouse",
            str(self.wheelhouse),
            *(a for r in self.recipes for a in ("--recipes", str(r))),
            "--cache",
            str(self.cache),
            *self.wheel_flags,
            "--json",
        ]


def new_batch_id(now: datetime, seed: str) -> str:
    """Sortable by time, unique by the seed (the file's text, the pid, the clock's ns)."""
    return f"{now:%Y%m%d-%H%M%S}-{hashlib.sha256(seed.encode()).hexdigest()[:6]}"


def passed_env(environ: Mapping[str, str], cache: Path) -> tuple[tuple[str, str], ...]:
    env = {k: v for k, v in environ.items() if k in PASSED_ENV or k.startswith("CBUILD_")}
    env["CBUILD_CACHE"] = str(cache)
    return tuple(sorted(env.items()))


# --- the script -------------------------------------------------------------------------------

_SBATCH_SAFE = re.compile(r"[^\s'\"\\]+")


def _sbatch_value(name: str, value: str) -> str:
    """sbatch reads #SBATCH lines itself, not bash: plain words, or double quotes around
    spaces. Anything else cannot be said there, so it is refused rather than mangled."""
    if _SBATCH_SAFE.fullmatch(value):
        return value
    if not any(c in value for c in '"\\\n\r'):
        return f'"{value}"'
    raise ConfigError(
        f"{name} {value!r} cannot be written in an #SBATCH line (quotes, backslashes, newlines)",
        fix="use a path or value without those characters",
    )


def render_script(job: BatchJob) -> str:
    """The job array script: bash, one array task per batch task."""
    if not job.tasks:
        raise ConfigError("a batch needs at least one task")
    opts = job.options
    # Slurm expands %a in the output path; a literal % in the folder must be doubled.
    output = str(job.folder / "tasks").replace("%", "%%") + "/%a.log"
    directives = [
        ("--job-name", f"cbuild-{job.id}"),
        ("--array", f"0-{len(job.tasks) - 1}"),
        ("--output", output),
        ("--chdir", str(job.folder)),
        ("--cpus-per-task", str(opts.cpus_per_task)),
        ("--partition", opts.partition),
        ("--time", opts.time),
        ("--mem", opts.mem),
    ]
    q = shlex.quote
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {k}={_sbatch_value(k, v)}" for k, v in directives if v]
    lines += [
        f"# cbuild batch {job.id}: {len(job.tasks)} package version(s) from {job.source}",
        "# Each array task runs `cbuild wheel` for one package version: its --json report goes",
        "# to tasks/<index>.json, its exit status to tasks/<index>.rc, the rest to <index>.log.",
        "set -u",
        f"export PYTHONPATH={q(str(job.code_root))}${{PYTHONPATH:+:$PYTHONPATH}}",
        *(f"export {k}={q(v)}" for k, v in job.env),
        f"tasks={q(str(job.folder / 'tasks'))}",
        "i=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}",
        'case "$i" in',
        *(f"  {t.index}) args=({shlex.join(job.task_args(t))}) ;;" for t in job.tasks),
        f'  *) echo "cbuild batch {job.id} has no task $i" >&2; exit 2 ;;',
        "esac",
        'rm -f "$tasks/$i.rc"  # a requeued task starts over',
        f"echo \"cbuild batch {job.id} task $i on $(hostname) at $(date '+%F %T'):"
        ' ${args[*]}" >&2',
        f'{q(job.python)} -m builder wheel "${{args[@]}}" {shlex.join(job.common_args())} \\',
        '  >"$tasks/$i.json.part"',
        "rc=$?",
        'mv -f "$tasks/$i.json.part" "$tasks/$i.json"',
        'echo "$rc" >"$tasks/$i.rc"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


# --- submission and records -------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SlurmError(
            f"{name} not found: Slurm's client commands are not installed here",
            fix="run this on a Slurm login node, or start a single-node Slurm with "
            "`ci/slurm-setup.sh start` (as root)",
        )
    return path


def record_of(job: BatchJob, job_id: str, cluster: str, created: datetime) -> dict[str, Any]:
    return {
        "id": job.id,
        "created": created.isoformat(timespec="seconds"),
        "source": str(job.source),
        "job_id": job_id,
        "cluster": cluster or None,
        "folder": str(job.folder),
        "script": str(job.script),
        "python": job.python,
        "wheelhouse": str(job.wheelhouse),
        "slurm": job.options.as_dict(),
        "tasks": [
            {**t.as_dict(), "log": str(job.log(t.index)), "report": str(job.report(t.index))}
            for t in job.tasks
        ],
    }


def submit(job: BatchJob, created: datetime) -> dict[str, Any]:
    """Write the batch folder, submit the script, write the record; returns the record."""
    sbatch = _tool("sbatch")
    script = render_script(job)
    (job.folder / "tasks").mkdir(parents=True)  # Slurm opens the logs there: it must exist
    job.script.write_text(script)
    job.script.chmod(0o755)
    proc = subprocess.run(
        [sbatch, "--parsable", str(job.script)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        shutil.rmtree(job.folder, ignore_errors=True)
        raise SlurmError(
            f"sbatch refused the job (exit {proc.returncode}): {proc.stderr.strip()}",
            fix="check --partition, --time, --mem and --cpus-per-task against `sinfo`",
        )
    # --parsable prints "jobid" or "jobid;cluster".
    job_id, _, cluster = proc.stdout.strip().partition(";")
    record = record_of(job, job_id, cluster, created)
    write_atomic(job.folder / "batch.json", json.dumps(record, indent=2) + "\n")
    return record


def batches_dir(cache: Path) -> Path:
    return cache / "batches"


def load_record(cache: Path, batch_id: str | None) -> dict[str, Any]:
    """The record of `batch_id`, or of the newest batch when it is None."""
    folder = batches_dir(cache)
    records = []
    for path in folder.glob("*/batch.json") if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text()))
    if not records:
        raise ConfigError(
            f"no batches in {folder}",
            fix="submit one with `cbuild batch FILE --slurm` (or pass the --cache it used)",
        )
    records.sort(key=lambda r: (r.get("created", ""), r.get("id", "")))
    if batch_id is None:
        return records[-1]
    for r in records:
        if r.get("id") == batch_id or str(r.get("job_id")) == batch_id:
            return r
    recent = ", ".join(r["id"] for r in records[-5:])
    raise ConfigError(f"no batch {batch_id!r} in {folder}", fix=f"recent batches: {recent}")


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmTaskState:
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, ...
    exit_code: int | None = None
    reason: str = ""


def _indices(spec: str) -> list[int]:
    """Array task ids as Slurm prints them: "3", "[0-4,7]", "0-4%2" (a throttle)."""
    spec = spec.strip("[]").split("%", 1)[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return []
        out += range(int(lo), int(hi or lo) + 1)
    return out


def _exit(text: str) -> int | None:
    """Slurm's "code:signal"; a signal counts as 128 + signal, as in a shell."""
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) else int(code)


def parse_squeue(text: str) -> dict[int, SlurmTaskState]:
    """`squeue -h -r -j JOB -o %K|%T|%r` lines: array task id, state, reason."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            for i in _indices(parts[0]):
                out[i] = SlurmTaskState(parts[1], None, parts[2] if parts[2] != "None" else "")
    return out


def parse_sacct(text: str, job_id: str) -> dict[int, SlurmTaskState]:
    """`sacct -X -n -P -j JOB -o JobID,State,ExitCode` lines: JOB_3|COMPLETED|0:0."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0].startswith(f"{job_id}_"):
            continue
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"  # "CANCELLED by 0"
        for i in _indices(parts[0][len(job_id) + 1 :]):
            out[i] = SlurmTaskState(state, _exit(parts[2]))
    return out


def parse_scontrol(text: str) -> dict[int, SlurmTaskState]:
    """`scontrol -o show job JOB`: one line per task (pending ones as one range line)."""
    out = {}
    for line in text.splitlines():
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if "ArrayTaskId" not in fields or "JobState" not in fields:
            continue
        reason = fields.get("Reason", "")
        for i in _indices(fields["ArrayTaskId"]):
            out[i] = SlurmTaskState(
                fields["JobState"],
                _exit(fields.get("ExitCode", "")),
                "" if reason == "None" else reason,
            )
    return out


def _run(argv: list[str]) -> str | None:
    """stdout of a Slurm query, or None where it has no answer (job purged, no accounting)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def query(job_id: str, cluster: str | None = None) -> dict[int, SlurmTaskState]:
    """Each array task's state, from every source that knows it: scontrol (recent jobs),
    sacct (where accounting runs), squeue (what is queued or running now, which wins)."""
    _tool("squeue")
    where = ["-M", cluster] if cluster else []
    states: dict[int, SlurmTaskState] = {}
    if (text := _run(["scontrol", *where, "-o", "show", "job", job_id])) is not None:
        states.update(parse_scontrol(text))
    sacct = ["sacct", *where, "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State,ExitCode"]
    if shutil.which("sacct") and (text := _run(sacct)) is not None:
        states.update(parse_sacct(text, job_id))
    squeue = ["squeue", *where, "-h", "-r", "-j", job_id, "-o", "%K|%T|%r"]
    if (text := _run(squeue)) is not None:
        states.update(parse_squeue(text))
    return states


def classify(slurm: SlurmTaskState | None, rc: int | None) -> str:
    """pending | running | completed | failed | unknown. Slurm says whether a task waits or
    runs; once it has ended, the exit status the task wrote is the truth. A task killed
    before it could write one (time limit, cancel, node failure) is failed by Slurm's word."""
    if slurm is not None and slurm.state in PENDING_STATES:
        return "pending"
    if slurm is not None and slurm.state in RUNNING_STATES:
        return "running"
    if rc is not None:
        return "completed" if rc == 0 else "failed"
    if slurm is not None:
        return "completed" if slurm.state == "COMPLETED" else "failed"
    return "unknown"


def _read_rc(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(state: str, slurm: SlurmTaskState | None, rc: int | None, report: Any) -> str:
    """One line on what a task did or why it waits."""
    if state in ("pending", "running"):
        return slurm.reason if slurm is not None else ""
    if isinstance(report, dict):
        if report.get("ok"):
            results = report.get("targets", [])
            if results and all(r.get("status") == Status.UP_TO_DATE for r in results):
                return "up to date"
            return f"placed {len(report.get('placed', []))} wheel(s)"
        if report.get("error"):
            return str(report["error"])
    if state == "failed":
        how = slurm.state if slurm is not None else "ended"
        return f"{how}, exit {rc if rc is not None else '?'}: see the log"
    return (
        "Slurm no longer knows this task and it left no exit status" if state == "unknown" else ""
    )


def status(record: dict[str, Any]) -> dict[str, Any]:
    """The batch record with each task's state, from Slurm and the files the task wrote."""
    states = query(str(record["job_id"]), record.get("cluster"))
    rows = []
    for t in record["tasks"]:
        folder = Path(t["log"]).parent
        rc = _read_rc(folder / f"{t['index']}.rc")
        slurm = states.get(t["index"])
        report = _read_report(Path(t["report"])) if rc is not None else None
        state = classify(slurm, rc)
        rows.append(
            {
                **t,
                "state": state,
                "slurm_state": slurm.state if slurm else None,
                "exit_code": rc if rc is not None else (slurm.exit_code if slurm else None),
                "detail": describe(state, slurm, rc, report),
            }
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {
        "id": record["id"],
        "job_id": record["job_id"],
        "folder": record["folder"],
        "done": all(r["state"] not in ("pending", "running") for r in rows),
        "counts": counts,
        "tasks": rows,
    }
