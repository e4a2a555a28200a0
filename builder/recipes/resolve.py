"""The checked document of one recipe file, and its resolution into a Recipe: the override tables
that match a version and target, applied in order (versions, accelerators, targets per level)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet

from builder.recipes.checks import PATCHES_DIR
from builder.recipes.fields import OVERRIDES, SECTIONS
from builder.recipes.model import Recipe, Source, TargetLike
from builder.recipes.where import Where


@dataclass
class Table:
    """One checked table of a recipe: its keys and its override children, in file order."""

    where: tuple[str, ...]  # TOML path of the table
    values: dict[tuple[str, str], Any]  # (section, key) -> checked value
    children: list[tuple[str, str, Table]] = field(default_factory=list)  # (kind, selector, t)


@dataclass
class Document:
    """A recipe file, parsed and checked (load.parse_recipe): resolved per version and target."""

    path: Path
    text: str
    name: str  # canonical
    root: Table

    def resolve(self, version: str, target: TargetLike | None = None) -> Recipe:
        def chain(table: Table) -> Iterator[Table]:
            yield table
            for kind in OVERRIDES:
                for k, selector, child in table.children:
                    if k == kind and _matches(kind, selector, version, target):
                        yield from chain(child)

        return self.build(list(chain(self.root)), version, target)

    def paths(self) -> Iterator[list[Table]]:
        """Every chain from the root to one table: what `check` resolves, version aside."""

        def walk(trail: list[Table]) -> Iterator[list[Table]]:
            yield trail
            for _, _, child in trail[-1].children:
                yield from walk([*trail, child])

        yield from walk([self.root])

    def build(self, tables: list[Table], version: str, target: TargetLike | None) -> Recipe:
        """The Recipe of one chain of tables, root first: later tables win key by key."""
        values: dict[str, Any] = {}
        source: dict[str, Any] = {}
        origin: dict[str, Where] = {}
        for table in tables:
            for (section, key), value in table.values.items():
                spec = SECTIONS[section][key]
                origin[spec.attr] = Where(self.path, self.text, (*table.where, section), key)
                if key == "binary_wheel":
                    source["kind"] = "wheel" if value else source.get("kind", "pypi")
                    if not value and source.get("kind") == "wheel":
                        source.pop("kind")
                    continue
                bucket, attr = (
                    (source, spec.attr[7:])
                    if spec.attr.startswith("source.")
                    else (values, spec.attr)
                )
                if spec.merge == "update" and attr == "env":
                    bucket[attr] = {**bucket.get(attr, {}), **value}
                elif spec.merge == "update":
                    keys = {k for k, _ in value}
                    bucket[attr] = (
                        *(kv for kv in bucket.get(attr, ()) if kv[0] not in keys),
                        *value,
                    )
                else:
                    bucket[attr] = value
        values.pop("name", None)
        recipe = Recipe(
            name=self.name,
            version=version,
            path=self.path,
            patches_dir=self.path.parent / PATCHES_DIR,
            source=_make_source(source, version, origin),
            target=target.id if target is not None else None,
            _doc=self,
            **values,
        )
        _check_resolved(recipe, origin, self)
        return recipe


def _make_source(given: dict[str, Any], version: str, origin: dict[str, Where]) -> Source:
    kinds = [k for k in ("url", "git") if given.get(k)]
    if given.get("kind") == "wheel":
        kinds.append("binary_wheel")
    if len(kinds) > 1:
        where = origin.get(f"source.{kinds[-1]}") or origin.get("source.kind")
        raise where.error(
            f"[source] {' and '.join(kinds)} exclude each other",
            fix="a recipe builds from one source: PyPI's sdist (default), a url, a git "
            "repository, or PyPI's binary wheel",
        )
    for needed, by in (("sha256", "url"), ("rev", "git")):
        if given.get(by) and not given.get(needed):
            raise origin[f"source.{by}"].error(
                f"[source] {by} needs {needed}",
                fix=f"add {needed} = ... under [source] (or in the version's override)",
            )
        if given.get(needed) and not given.get(by):
            raise origin[f"source.{needed}"].error(f"[source] {needed} without {by}")
    if given.get("submodules") and not given.get("git"):
        raise origin["source.submodules"].error("[source] submodules without git")
    kind = given.pop("kind", None) or (
        "url" if given.get("url") else "git" if given.get("git") else "pypi"
    )
    templated = {
        k: v.format(version=version) if k in ("url", "rev", "filename", "folder") and v else v
        for k, v in given.items()
    }
    return Source(kind=kind, **templated)


def _check_resolved(recipe: Recipe, origin: dict[str, Where], doc: Document) -> None:
    if recipe.test_python and recipe.import_names == ():
        raise (origin.get("test_python") or origin["import_names"]).error(
            "[test] python runs after importing import_names, but import_names is empty",
            fix="name the modules to import in [package] import_names, or move the code to "
            "[test] commands as python -c '...'",
        )
    if recipe.suffix and not re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", recipe.name + recipe.suffix
    ):
        raise origin["suffix"].error(f"{recipe.name}{recipe.suffix} is not a project name")


def _matches(kind: str, selector: str, version: str, target: TargetLike | None) -> bool:
    if kind == "versions":
        return SpecifierSet(selector).contains(version, prereleases=True)
    if target is None:
        return False  # resolved for no particular target: only the common part
    subject = target.accelerator if kind == "accelerators" else target.id
    negate = selector.startswith("!")
    return fnmatch.fnmatchcase(subject, selector.removeprefix("!")) != negate
