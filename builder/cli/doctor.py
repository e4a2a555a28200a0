"""`cbuild doctor`: what this host offers cbuild. For now one check: whether each stack's real
repository is mounted from CVMFS (and its revision), which `--provider cvmfs|auto` needs; the
rest of the checks (engines, QEMU, binfmt_misc, ...) are issue 15's."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from builder.cli.common import JsonOpt, err


def doctor_cmd(json_out: JsonOpt = False) -> None:
    """Report what this host offers cbuild (the CVMFS stacks, for now)."""
    from builder.providers import CvmfsProvider, choose
    from builder.targets.model import load_stack, stack_names

    cvmfs = CvmfsProvider()
    stacks = [
        cvmfs.status(st) for n in stack_names() if cvmfs.name in (st := load_stack(n)).providers
    ]
    auto, why = choose("auto")
    if json_out:
        print(json.dumps({"cvmfs": stacks, "provider_auto": auto, "why": why}, indent=2))
        return
    for s in stacks:
        state = (
            f"mounted at {s['host_path']}, revision {s['revision'] or 'unknown (no attribute)'}"
            if s["mounted"]
            else f"not mounted (no {s['profile']})"
        )
        err.print(f"cvmfs: stack {s['stack']} ({s['repository']}): {escape(state)}")
    err.print(f"--provider auto picks {auto} here ({escape(why)})")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
