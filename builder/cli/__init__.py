"""The Typer CLI: one module per command group, each a thin layer over one service."""
