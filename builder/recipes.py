"""Recipes: what a package needs beyond its sdist, one strictly checked `recipes/<name>.toml` each.

    [package]
    name = "biopython"
    import_names = ["Bio"]          # [] = no import test; no recipe = derived from the wheel

    [build]
    requires = ["numpy>=2"]         # extra build wheels (PEP 508)
    env = { CFLAGS_EXTRA = "-g0" }

    [test]
    requires = ["numpy"]            # extra runtime test wheels (PEP 508)
    commands = ["python -c 'import Bio'"]

    [versions."<1.80".test]         # overrides for the matching versions, key by key;
    requires = ["numpy<2"]          # later matching tables win

An unknown key is an error that names the file, line and closest valid key: the shell
configs this replaces silently ignored typos.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str  # canonical (PEP 503) project name
    version: str  # the version this recipe was resolved for
    import_names: tuple[str, ...] | None = None  # None: derive from the wheel's top-level names
    build_requires: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)  # [build] env
    test_requires: tuple[str, ...] = ()
    test_commands: tuple[str, ...] = ()
    path: Path | None = None  # the recipe file; None when the defaults apply


# --- schema -----------------------------------------------------------------------------------
# A checker takes (value, where) and returns the normalised value or raises ConfigError.
Checker = Callable[[Any, "_Where"], Any]


@dataclass(frozen=True)
class _Where:
    """A key's place, for messages: file, TOML table path and key."""

    path: Path
    text: str
    table: tuple[str, ...]
    key: str

    @property
    def section(self) -> str:
        return "[" + ".".join(_quote(p) for p in self.table) + "]" if self.table else "top level"

    @property
    def place(self) -> str:
        return f"in {self.section}" if self.table else "at the top level"

    def error(self, message: str, fix: str | None = None) -> ConfigError:
        line = _find_line(self.text, self.table, self.key)
        return ConfigError(f"{_show(self.path)}{f':{line}' if line else ''}: {message}", fix)


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"{where.key!r} in {where.section} must be a string, not {_type(value)}")
    return value


def _str_list(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(
            f"{where.key!r} in {where.section} must be a list of strings, not {_type(value)}"
        )
    return tuple(value)


def _import_names(value: Any, where: _Where) -> tuple[str, ...]:
    names = _str_list(value, where)
    for n in names:
        if not all(part.isidentifier() for part in n.split(".")):
            raise where.error(
                f"{n!r} in {where.section} {where.key} is not a Python module name",
                fix="use dotted identifiers such as 'Bio' or 'Bio.Align'",
            )
    return names


def _requirements(value: Any, where: _Where) -> tuple[str, ...]:
    reqs = _str_list(value, where)
    for r in reqs:
        try:
            Requirement(r)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise where.error(
                f"invalid requirement {r!r} in {where.section} {where.key}: {reason}",
                fix="write PEP 508 requirements, e.g. 'numpy>=1.26' or 'scipy'",
            ) from exc
    return reqs


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _env(value: Any, where: _Where) -> dict[str, str]:
    if not isinstance(value, dict):
        raise where.error(
            f"{where.key!r} in {where.section} must be a table of strings, not {_type(value)}"
        )
    for k, v in value.items():
        if not _ENV_NAME.match(k):
            raise where.error(f"{k!r} in {where.section} env is not an environment variable name")
        if not isinstance(v, str):
            raise where.error(f"env.{k} in {where.section} must be a string, not {_type(v)}")
    return dict(value)


SCHEMA: dict[str, dict[str, Checker]] = {
    "package": {"name": _str, "import_names": _import_names},
    "build": {"requires": _requirements, "env": _env},
    "test": {"requires": _requirements, "commands": _str_list},
}
# Which Recipe field each key fills.
_FIELDS = {
    ("package", "name"): "name",
    ("package", "import_names"): "import_names",
    ("build", "requires"): "build_requires",
    ("build", "env"): "env",
    ("test", "requires"): "test_requires",
    ("test", "commands"): "test_commands",
}
# The identity of a recipe is not something a version can change.
_NOT_OVERRIDABLE = {("package", "name")}


# --- loading ----------------------------------------------------------------------------------


def recipe_path(name: str, recipes_dir: Path) -> Path:
    return recipes_dir / f"{canonicalize_name(name)}.toml"


def load_recipe(name: str, version: str, recipes_dir: Path) -> Recipe:
    """The recipe for `name` resolved for `version`; the defaults when there is no file."""
    try:
        Version(version)
    except InvalidVersion as exc:
        raise ConfigError(f"{version!r} is not a valid version (PEP 440)") from exc
    path = recipe_path(name, recipes_dir)
    if not path.is_file():
        return Recipe(name=canonicalize_name(name), version=version)
    return read_recipe(path, version)


def read_recipe(path: Path, version: str) -> Recipe:
    """Check all of `path` (every override, matching or not) and resolve it for `version`."""
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f":{m[1]}" if m else ""
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        col = f" (column {m[2]})" if m else ""
        raise ConfigError(f"{_show(path)}{where}: invalid TOML: {reason}{col}") from exc

    base = _check_sections(path, text, (), data, allowed_top={"versions"})
    fields: dict[str, Any] = {_FIELDS[k]: v for k, v in base.items()}

    pkg = _Where(path, text, ("package",), "name")
    if ("package", "name") not in base:
        raise pkg.error("missing [package] name", fix=f'add name = "{path.stem}" under [package]')
    if canonicalize_name(base[("package", "name")]) != canonicalize_name(path.stem):
        raise pkg.error(
            f"[package] name {base[('package', 'name')]!r} does not match the file name",
            fix=f"a recipe for {base[('package', 'name')]!r} belongs in "
            f"{canonicalize_name(base[('package', 'name')])}.toml",
        )
    fields["name"] = canonicalize_name(base[("package", "name")])

    versions = data.get("versions", {})
    if not isinstance(versions, dict):
        raise _Where(path, text, (), "versions").error(
            f"'versions' must be a table of tables, not {_type(versions)}"
        )
    for spec, table in versions.items():
        where = _Where(path, text, ("versions",), spec)
        if not spec.strip():
            raise where.error(
                "empty version specifier in [versions]", fix='e.g. [versions."<1.80"]'
            )
        try:
            matches = SpecifierSet(spec).contains(version, prereleases=True)
        except InvalidSpecifier as exc:
            raise where.error(
                f"invalid version specifier {spec!r} in [versions]",
                fix=f'use PEP 440 specifiers, e.g. [versions."=={spec}"] or [versions.">=1.80,<2"]',
            ) from exc
        if not isinstance(table, dict):
            raise where.error(f"[versions.{_quote(spec)}] must be a table, not {_type(table)}")
        override = _check_sections(path, text, ("versions", spec), table, allowed_top=set())
        for key in override.keys() & _NOT_OVERRIDABLE:
            raise _Where(path, text, ("versions", spec, key[0]), key[1]).error(
                f"[package] {key[1]} cannot be overridden per version"
            )
        if not matches:
            continue
        for key, value in override.items():
            if key == ("build", "env"):
                # Per variable: an override sets or changes variables, keeping the others.
                fields["env"] = {**fields.get("env", {}), **value}
            else:
                fields[_FIELDS[key]] = value
    return Recipe(version=version, path=path, **fields)


def _check_sections(
    path: Path, text: str, prefix: tuple[str, ...], data: dict[str, Any], allowed_top: set[str]
) -> dict[tuple[str, str], Any]:
    """Validate the [package]/[build]/[test] tables of `data` (at table path `prefix`) and
    return {(section, key): checked value} for the keys present."""
    out: dict[tuple[str, str], Any] = {}
    for section, table in data.items():
        if section in allowed_top:
            continue
        if section not in SCHEMA:
            raise _unknown(path, text, prefix, section, [*SCHEMA, *allowed_top])
        where = _Where(path, text, prefix, section)
        if not isinstance(table, dict):
            raise where.error(f"{where.key!r} must be a table, not {_type(table)}")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise _unknown(path, text, (*prefix, section), key, list(SCHEMA[section]))
            out[(section, key)] = SCHEMA[section][key](
                value, _Where(path, text, (*prefix, section), key)
            )
    return out


def _unknown(
    path: Path, text: str, table: tuple[str, ...], key: str, valid: list[str]
) -> ConfigError:
    where = _Where(path, text, table, key)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return where.error(
        f"unknown key {key!r} {where.place}{hint}",
        fix=f"valid keys {where.place}: {', '.join(valid)}",
    )


# --- messages ---------------------------------------------------------------------------------


def _type(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _quote(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def _show(path: Path) -> str:
    """The path relative to the working folder when it is inside it, as a user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


_HEADER = re.compile(r"^\s*\[\[?(.+?)\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*="""
)
_PART = re.compile(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in _PART.findall(dotted))


def _find_line(text: str, table: tuple[str, ...], key: str) -> int | None:
    """The line where `key` of table `table` is written, found by scanning the text: tomllib
    keeps no positions. Understands [headers] and dotted keys; failing that, the first line
    that mentions the key, so a message still points somewhere useful."""
    lines = text.splitlines()
    current: tuple[str, ...] = ()
    for no, line in enumerate(lines, 1):
        if m := _HEADER.match(line):
            current = _parts(m[1])
            # The key is itself a table, e.g. [build] or [versions."<2".test] for "<2".
            if current[: len(table) + 1] == (*table, key):
                return no
        elif (m := _KEY.match(line)) and (*current, *_parts(m[1]))[: len(table) + 1] == (
            *table,
            key,
        ):
            return no
    word = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
    return next((no for no, line in enumerate(lines, 1) if word.search(line)), None)
