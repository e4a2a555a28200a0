"""`cbuild inspect`: a read-only command over wheel files (`cbuild place` is `cli.place`).

Exit status: 0 when every wheel could be read, whatever the findings (they are facts to read,
and a wheel from PyPI is expected to have some before repair); 2 when any input could not be
read as a wheel at all (missing, not a zip, unsafe member paths). The other wheels given are
still reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from builder.cli.common import JsonOpt, print_error
from builder.errors import CbuildError
from builder.wheels import info as wheelinfo

_Wheels = Annotated[list[Path], typer.Argument(help="Wheel files.", show_default=False)]
_Stack = Annotated[
    str | None,
    typer.Option(help="Stack whose rules apply (default: the manifest's, or gentoo2023)."),
]


def _failed(path: Path, exc: CbuildError) -> dict[str, Any]:
    return {"path": str(path), "error": exc.message, "fix": exc.fix}


def inspect_cmd(
    wheels: _Wheels,
    json_out: JsonOpt = False,
    stack: _Stack = None,
) -> None:
    """Tags, label, requirements, ELF facts and the x86 instruction levels each wheel's code
    contains (a static scan: what the code contains, not what it requires)."""
    rows: list[dict[str, Any]] = []
    code = 0
    for i, path in enumerate(wheels):
        try:
            report = wheelinfo.inspect_wheel(path, stack or wheelinfo.DEFAULT_STACK)
        except CbuildError as exc:
            code = max(code, exc.exit_code)
            print_error(exc.message, exc.fix)
            rows.append(_failed(path, exc))
            continue
        rows.append(report.as_dict())
        if not json_out:
            print(("\n" if i else "") + report.text())
    if json_out:
        print(json.dumps(rows, indent=2))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
