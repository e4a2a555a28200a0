"""What ships inside cbuild's wheel: the built-in recipes (`recipes/`, with `recipes/patches/`),
the recipe JSON schema and the report's HTML template. Read through importlib.resources, so an
installed cbuild never looks at (or writes into) a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """The file or folder `parts` of the package data, as a real path (recipes are read with
    their patches beside them, so a zipped install cannot serve them)."""
    item = resources.files(__name__).joinpath(*parts)
    if not isinstance(item, Path):  # pragma: no cover - a zip import
        raise RuntimeError(f"cbuild's package data is not on disk ({item}): install it unzipped")
    return item


def read_text(*parts: str) -> str:
    return resources.files(__name__).joinpath(*parts).read_text(encoding="utf-8")
