"""`cbuild report WHEELHOUSE [--html FILE] [--json] [--against W]`: the wheelhouse before a
sync, as a table, JSON, or one self-contained HTML page (builder.workflows.report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from builder.cli.common import JsonOpt, err, fail
from builder.errors import CbuildError
from builder.files import write_atomic


def report_cmd(
    wheelhouse: Annotated[Path, typer.Argument(help="The wheelhouse root.")],
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML page here.")] = None,
    against: Annotated[
        Path | None,
        typer.Option(help="Another wheelhouse (the site's): what a sync would add or replace."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every wheel: placed where, tested how, the level its code contains against the level its
    folder promises, GPU architectures, label and tag problems, missing manifests; exit 1 when
    a wheel has a problem."""
    from builder.workflows.report import build_report, render_html

    try:
        report = build_report(wheelhouse, against)
    except CbuildError as exc:
        fail(exc)
    if html is not None:
        write_atomic(html, render_html(report))
        err.print(f"wrote {escape(str(html))}")
    if json_out:
        print(json.dumps(report.as_dict(), indent=2))
    elif html is None:
        table = Table("wheel", "folder", "target", "tested", "contains / promises", "problems")
        for r in report.rows:
            table.add_row(
                r.file,
                r.folder,
                r.target or "(no manifest)",
                r.tested,
                f"{r.contains or '-'} / {r.promised or 'any'}",
                "; ".join(r.problems),
            )
        err.print(table, soft_wrap=False)
        for s in report.sync:
            print(f"{s.action:<10} {s.path}")
    if report.problems:
        err.print(f"[yellow]{report.problems} wheel(s) with problems[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
