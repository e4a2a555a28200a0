"""Recipes written out as TOML: `to_toml` (for `recipe show` and the legacy importer) and the
starting recipe of `recipe new`."""

from __future__ import annotations

import json
import re
from typing import Any

from packaging.utils import canonicalize_name

from builder.recipes.fields import OVERRIDES, SECTIONS
from builder.recipes.where import quote


def new_recipe_text(name: str, import_name: str | None = None) -> str:
    """A starting recipe: the common keys, the rest as comments."""
    canonical = canonicalize_name(name)
    module = import_name or re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f'''# Recipe for {name}. `cbuild recipe check` checks it and
# `cbuild recipe show {canonical} VERSION` prints it resolved; its keys: `cbuild recipe schema`.

[package]
name = "{canonical}"
import_names = ["{module}"]   # [] for no import test
# pythons = ">=3.10"

# [source]                    # default: the PyPI sdist
# url = "https://example.org/{canonical}-{{version}}.tar.gz"
# sha256 = "..."

[build]
requires = []                 # extra build requirements, e.g. "cython>=3"
# env = {{ NPY_NUM_BUILD_JOBS = "2" }}
# patches = ["{canonical}-fix.patch"]   # under recipes/patches/
# pre_build = ["sed -i 's/-march=native//' setup.py"]
# config_settings = {{ "setup-args" = ["-Dblas=openblas"] }}

# [system]
# apt = ["libfoo-dev"]

[test]
requires = []
# python = ["assert {module}.__version__"]   # run after the import
# commands = ["python -c 'import {module}'"]

# [wheel]
# remove_requires = ["nvidia-*"]

# [versions."<2".build]
# requires = ["cython<3"]
'''


def to_toml(data: dict[str, Any], comments: dict[str, list[str]] | None = None) -> str:
    """Recipe-shaped data (tables of strings, booleans, lists of strings, string tables) as TOML.
    Nested tables become dotted headers; `comments` maps a header ("build") to comment lines
    written above it. Multi-line strings are written as literal blocks, readable as shell."""
    comments = comments or {}
    out: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            if "\n" in v and "'''" not in v and not v.endswith("'"):
                return "'''\n" + v + "'''"
            if '"' in v and "'" not in v and "\n" not in v and v.isprintable():
                return f"'{v}'"  # a literal string: shell quoting stays readable
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            items = [value(x) for x in v]
            flat = "[" + ", ".join(items) + "]"
            if len(flat) <= 80 and not any("\n" in x for x in items):
                return flat
            return "[\n" + "".join(f"    {x},\n" for x in items) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} to a recipe")

    def table(path: tuple[str, ...], content: dict[str, Any]) -> None:
        scalars = {k: v for k, v in content.items() if not _is_table(k, v, path)}
        header = ".".join(quote(p) for p in path)
        if scalars or header in comments:
            out.extend(["", *(f"# {c}" for c in comments.get(header, []))])
            out.append(f"[{header}]")
            out.extend(f"{_key(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in content.items():
            if _is_table(k, v, path):
                table((*path, k), v)

    for k, v in data.items():
        table((k,), v)
    return "\n".join(out).lstrip("\n") + "\n"


def _key(key: str) -> str:
    # Bare keys may start with "-", but "--build-option" reads better quoted.
    return key if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", key) else json.dumps(key)


def _is_table(key: str, value: Any, path: tuple[str, ...]) -> bool:
    # Tables of tables (sections, overrides) get headers; string tables (env) stay inline.
    return isinstance(value, dict) and (
        key in SECTIONS or key in OVERRIDES or (path and path[-1] in OVERRIDES)
    )
