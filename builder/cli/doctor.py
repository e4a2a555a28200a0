"""`cbuild doctor [--json]`: what this host offers cbuild and what would make builds and tests
go wrong here, each problem with its fix (builder.workflows.doctor); exit 1 when something
cbuild needs is missing."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from builder.cli.common import JsonOpt, err, site_config

_STYLE = {"ok": "green", "info": "dim", "warn": "yellow", "missing": "bold red"}


def doctor_cmd(json_out: JsonOpt = False) -> None:
    """Check the engine, QEMU, the CPU levels testable here, Slurm, free space, the CVMFS
    stacks, and the user environment (~/.local, PYTHONPATH, PIP_*, pip's cache)."""
    from builder.workflows.doctor import cvmfs_status, run_checks

    cvmfs = cvmfs_status()
    checks = run_checks(site_config(), cvmfs=cvmfs)
    failed = [c for c in checks if c.failed]
    if json_out:
        out = {"ok": not failed, "checks": [c.as_dict() for c in checks], **cvmfs}
        print(json.dumps(out, indent=2))
    else:
        for c in checks:
            err.print(f"[{_STYLE[c.state]}]{c.state:<7}[/] {c.area}: {escape(c.detail)}")
            if c.fix and c.state != "ok":
                err.print(f"          [bold]fix:[/] {escape(c.fix)}")
        problems = sum(c.state in ("warn", "missing") for c in checks)
        err.print(
            f"{len(failed)} needed thing(s) missing, {problems} problem(s) in all"
            if problems
            else "no problems found"
        )
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
