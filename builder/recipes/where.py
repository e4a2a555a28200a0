"""Where a key of a recipe is written, for messages that name the file and line: tomllib keeps
no positions, so the line is found by scanning the text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ConfigError


@dataclass(frozen=True)
class Where:
    """A key's place, for messages: file, TOML table path and key."""

    path: Path
    text: str
    table: tuple[str, ...]
    key: str

    @property
    def section(self) -> str:
        return "[" + ".".join(quote(p) for p in self.table) + "]" if self.table else "top level"

    @property
    def place(self) -> str:
        return f"in {self.section}" if self.table else "at the top level"

    @property
    def line(self) -> int | None:
        return find_line(self.text, self.table, self.key)

    def error(self, message: str, fix: str | None = None) -> ConfigError:
        line = self.line
        exc = ConfigError(f"{show(self.path)}{f':{line}' if line else ''}: {message}", fix)
        exc.path, exc.line = self.path, line  # type: ignore[attr-defined]
        return exc


def type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def quote(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def show(path: Path) -> str:
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


def find_line(text: str, table: tuple[str, ...], key: str) -> int | None:
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
