"""`cbuild config show`: the effective site configuration (builder.config) and where each value
came from: a default, the cbuild.toml found, or a CBUILD_* variable."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from builder.cli.common import JsonOpt, err, site_config

config_app = typer.Typer(
    help="The site configuration (cbuild.toml, CBUILD_*).", no_args_is_help=True
)


@config_app.command("show")
def show_cmd(json_out: JsonOpt = False) -> None:
    """Print each setting's value and where it came from (flags override both, per command)."""
    data = site_config().as_dict()
    if json_out:
        print(json.dumps(data, indent=2))
        return
    err.print(f"file: {escape(data.pop('file') or 'none (no cbuild.toml here or above)')}")
    for key, item in data.items():
        value = item["value"]
        if key == "recipes":
            value = " -> ".join(value) + "  (searched in this order; the last is built in)"
        elif value is None:
            value = "as many as the cores"
        print(f"{key:<10} {value}  [{item['source']}]")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
