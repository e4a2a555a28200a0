"""`cbuild batch FILE` (run a list of package versions here, on Slurm, or print a GitHub
Actions matrix for it) and `cbuild batch status`.

`cbuild batch FILE ...` is short for `cbuild batch run FILE ...`.

Exit status of a local run: 0 when every package was built or up to date, 1 when any failed
(each package's own exit code is in --json), 2 for a bad batch file, 130 when interrupted.
`cbuild batch status` exits 1 when any task failed, else 0 (also while tasks still wait or run).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from builder.cache import default_cache
from builder.cli.common import (
    AllowHostNetworkOpt,
    JsonOpt,
    RecipesOpt,
    engine_for,
    engine_option,
    err,
    fail,
    say,
    site_config,
)
from builder.errors import CbuildError, ConfigError


class _DefaultToRun(TyperGroup):
    """`cbuild batch FILE` runs `cbuild batch run FILE`: anything that is not a subcommand's
    name (or --help) is the start of a run's arguments."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(
    cls=_DefaultToRun,
    no_args_is_help=True,
    help="Build a list of package versions: here, as a Slurm job array, or as a GitHub "
    "Actions matrix. `cbuild batch FILE ...` is `cbuild batch run FILE ...`.",
)

_Cache = Annotated[Path | None, typer.Option(help="Cache and work folder (batches live here).")]
_Engine = Annotated[str | None, engine_option("With --slurm, each task chooses on its node.")]


def _cache(cache: Path | None) -> Path:
    return (cache or default_cache()).resolve()


@batch_app.command("run")
def run_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            help="One package==version a line, optionally followed by target ids (none: "
            "every target); # comments.",
            show_default=False,
        ),
    ],
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", min=1, help="Targets of a package at once (default: the cores)."
        ),
    ] = None,
    wheelhouse: Annotated[Path | None, typer.Option(help="Wheelhouse root.")] = None,
    recipes: RecipesOpt = None,
    cache: _Cache = None,
    force: Annotated[bool, typer.Option(help="Replace wheels that already exist.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail when a wheel could not be tested.")] = False,
    rebuild: Annotated[
        bool, typer.Option(help="Build even when a run with the same inputs is recorded.")
    ] = False,
    slurm: Annotated[
        bool, typer.Option("--slurm", help="Submit one Slurm job array instead of building here.")
    ] = False,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Slurm time limit per task, e.g. 1:00:00.")
    ] = None,
    cpus_per_task: Annotated[
        int, typer.Option("--cpus-per-task", min=1, help="Slurm CPUs per task.")
    ] = 1,
    mem: Annotated[str | None, typer.Option(help="Slurm memory per task, e.g. 8G.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --slurm: print the script, submit nothing.")
    ] = False,
    matrix: Annotated[
        str | None, typer.Option(help="Print a CI matrix for the list: 'github'.")
    ] = None,
    json_out: JsonOpt = False,
    engine_name: _Engine = None,
    allow_host_network: AllowHostNetworkOpt = False,
) -> None:
    """Build every package version in FILE here, submit it to Slurm, or print its CI matrix."""
    cfg = site_config(
        wheelhouse=wheelhouse, recipes=recipes, cache=cache, jobs=jobs, engine=engine_name
    )
    engine_name = cfg.engine.value
    from builder.workflows import slurm as slurm_mod
    from builder.workflows.batch import github_matrix, read_batch

    slurm_only = {
        "--partition": partition is not None,
        "--time": time_limit is not None,
        "--cpus-per-task": cpus_per_task != 1,
        "--mem": mem is not None,
        "--dry-run": dry_run,
    }
    try:
        if matrix is not None and (slurm or any(slurm_only.values())):
            raise ConfigError("--matrix prints a matrix; it does not go with --slurm options")
        if matrix is not None and matrix != "github":
            raise ConfigError(f"unknown matrix format {matrix!r}", fix="use --matrix github")
        if not slurm and (given := [k for k, v in slurm_only.items() if v]):
            raise ConfigError(
                f"{', '.join(given)}: only with --slurm", fix="add --slurm, or drop them"
            )
        if slurm and jobs is not None:
            raise ConfigError(
                "--jobs is for local runs; a Slurm task runs as many targets at once as it "
                "has CPUs",
                fix="use --cpus-per-task N",
            )
        entries = read_batch(file)
    except CbuildError as exc:
        fail(exc)
    if matrix is not None:
        print(json.dumps(github_matrix(entries), separators=(",", ":")))
        return
    flags = [
        f for f, on in (("--force", force), ("--strict", strict), ("--rebuild", rebuild)) if on
    ]
    flags += ["--engine", engine_name]  # "auto" by default: each task picks on its node
    flags += ["--allow-host-network"] if allow_host_network else []
    if slurm:
        _submit(
            file,
            entries,
            cfg.wheelhouse.value,
            cfg.recipes.value,  # the site's folders: each task adds the built-in ones
            cfg.cache.value,
            flags,
            json_out,
            dry_run,
            slurm_mod.SlurmOptions(partition, time_limit, cpus_per_task, mem),
        )
        return
    _run_here(
        entries,
        cfg.jobs.value,
        cfg.wheelhouse.value,
        cfg.recipe_dirs,
        cfg.cache.value,
        force,
        strict,
        rebuild,
        json_out,
        engine_name,
        allow_host_network=allow_host_network,
    )


def _run_here(
    entries: list[Any],
    jobs: int | None,
    wheelhouse: Path,
    recipes: tuple[Path, ...],
    cache: Path | None,
    force: bool,
    strict: bool,
    rebuild: bool,
    json_out: bool,
    engine_name: str,
    *,
    allow_host_network: bool = False,
) -> None:
    from builder.pipeline.job import Pipeline
    from builder.pipeline.model import RunReport, WheelRequest
    from builder.progress import TargetProgress
    from builder.workflows.batch import BatchEntry, Outcome, run_local

    try:
        # No engine fails the batch at once, not per package.
        engine = engine_for(engine_name, allow_host_network=allow_host_network)
    except CbuildError as exc:
        fail(exc)
    cache_dir, wh, rec = _cache(cache), wheelhouse.resolve(), recipes
    total = len(entries)

    def build(e: BatchEntry) -> RunReport:
        n = entries.index(e) + 1
        say("", f"[{n}/{total}] {e.spec}")
        req = WheelRequest(
            e.package,
            e.version,
            e.targets,
            wh,
            cache_dir,
            rec,
            force,
            strict,
            jobs=jobs or max(1, min(os.cpu_count() or 1, len(e.targets))),
            rebuild=rebuild,
        )
        with TargetProgress(err, list(e.target_ids)) as progress:
            return Pipeline(engine, progress).run(req)

    outcomes: list[Outcome] = []
    interrupted = False
    try:
        for o in run_local(entries, build):
            outcomes.append(o)
            say(o.entry.package, f"{o.state} ({o.seconds:.0f} s)")
    except KeyboardInterrupt:
        interrupted = True
    failed = [o for o in outcomes if o.state == "failed"]
    if json_out:
        result = {
            "ok": not failed and not interrupted,
            "interrupted": interrupted,
            "packages": [o.as_dict() for o in outcomes],
            "not_run": [e.spec for e in entries[len(outcomes) :]],
        }
        print(json.dumps(result, indent=2))
    else:
        _summary(outcomes, entries[len(outcomes) :])
    if interrupted:
        err.print("[bold red]interrupted:[/] containers removed; later packages not run")
        raise typer.Exit(130)
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} of {total} package version(s) failed")
        raise typer.Exit(1)


def _summary(outcomes: list[Any], not_run: list[Any]) -> None:
    from rich.table import Table

    table = Table("package", "version", "targets", "state", "time", "detail", title="batch")
    for o in outcomes:
        detail = o.error or ""
        if o.report is not None and o.state != "failed":
            n = len(o.report.placed)
            detail = f"{n} wheel(s) in place" if o.state == "up to date" else f"placed {n} wheel(s)"
        table.add_row(
            o.entry.package,
            o.entry.version,
            " ".join(o.entry.target_ids),
            o.state,
            f"{o.seconds:.0f} s",
            detail.splitlines()[0] if detail else "",
        )
    for e in not_run:
        table.add_row(e.package, e.version, " ".join(e.target_ids), "not run", "", "")
    err.print(table, soft_wrap=False)
    for o in outcomes:
        if o.state == "failed":
            err.print(f"  {o.entry.spec}: {o.error}")
            if o.fix:
                err.print(f"    fix: {o.fix}")
        for p in o.report.placed if o.report is not None else []:
            print(p)


def _submit(
    file: Path,
    entries: list[Any],
    wheelhouse: Path,
    recipes: tuple[Path, ...],
    cache: Path | None,
    flags: list[str],
    json_out: bool,
    dry_run: bool,
    options: Any,
) -> None:
    import builder
    from builder.wheelhouse.layout import check_writable
    from builder.workflows import slurm
    from builder.workflows.batch import plan_tasks

    try:
        cache_dir, wh = _cache(cache), wheelhouse.resolve()
        if not dry_run:
            check_writable(wh)
        now = datetime.now().astimezone()
        batch_id = slurm.new_batch_id(now, f"{file.read_text()}{os.getpid()}{time.time_ns()}")
        job = slurm.BatchJob(
            id=batch_id,
            folder=slurm.batches_dir(cache_dir) / batch_id,
            source=file.resolve(),
            tasks=tuple(plan_tasks(entries)),
            # The interpreter and the code that submitted: the tasks run exactly this cbuild.
            python=sys.executable,
            code_root=Path(builder.__file__).resolve().parent.parent,
            wheelhouse=wh,
            recipes=recipes,
            cache=cache_dir,
            options=options,
            wheel_flags=tuple(flags),
            env=slurm.passed_env(os.environ, cache_dir),
        )
        if dry_run:
            print(slurm.render_script(job), end="")
            return
        record = slurm.submit(job, now)
    except CbuildError as exc:
        fail(exc)
    if json_out:
        keys = ("id", "job_id", "cluster", "folder", "script", "tasks")
        print(json.dumps({k: record[k] for k in keys}, indent=2))
    else:
        print(record["job_id"])
        err.print(
            f"batch {record['id']}: {len(record['tasks'])} task(s) in job {record['job_id']}; "
            f"logs in {record['folder']}/tasks/; `cbuild batch status {record['id']}`"
        )


@batch_app.command("status")
def status_cmd(
    batch_id: Annotated[
        str | None,
        typer.Argument(
            help="Batch id or Slurm job id (default: the newest batch).", show_default=False
        ),
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="The newest batch.")] = False,
    cache: _Cache = None,
    json_out: JsonOpt = False,
) -> None:
    """Each task of a Slurm batch: pending, running, completed or failed, with its log."""
    from rich.table import Table

    from builder.workflows import slurm

    try:
        if latest and batch_id is not None:
            raise ConfigError("give a batch id or --latest, not both")
        report = slurm.status(slurm.load_record(_cache(cache), batch_id))
    except CbuildError as exc:
        fail(exc)
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        table = Table(
            "task",
            "package",
            "version",
            "targets",
            "state",
            "detail",
            "log",
            title=f"batch {report['id']} (job {report['job_id']})",
        )
        for t in report["tasks"]:
            detail = t["detail"].splitlines()[0] if t["detail"] else ""
            table.add_row(
                str(t["index"]),
                t["package"],
                t["version"],
                " ".join(t["targets"]),
                t["state"],
                detail,
                t["log"],
            )
        err.print(table, soft_wrap=False)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
        print(f"{report['id']}: {counts}")
    if report["counts"].get("failed"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
