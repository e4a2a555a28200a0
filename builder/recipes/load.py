"""Finding, checking and loading recipe files: every mistake of a file is collected (RecipeErrors),
each with `file:line` and a fix; an unknown key names the closest valid one."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.config import builtin_recipes
from builder.errors import ConfigError
from builder.recipes.fields import OVERRIDES, SECTIONS
from builder.recipes.model import Recipe, TargetLike
from builder.recipes.resolve import Document, Table
from builder.recipes.where import Where, quote, show, type_name

# The recipes that ship with cbuild (package data), searched after a site's (builder.config).
BUILTIN_RECIPES = builtin_recipes()
# One recipes folder, or several searched in order (the first holding <name>.toml wins).
RecipeDirs = Path | Sequence[Path]


class RecipeErrors(ConfigError):
    """All the mistakes found in one recipe file, each with its line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        if len(errors) == 1:
            super().__init__(errors[0].message, errors[0].fix)
        else:
            super().__init__("\n".join(str(e) for e in errors))


def recipe_path(name: str, recipes_dir: RecipeDirs) -> Path:
    """`name`'s recipe file: in the first of the folders that holds one, else where the first
    folder would hold it (where a new one is written)."""
    dirs = [recipes_dir] if isinstance(recipes_dir, Path) else list(recipes_dir)
    file = f"{canonicalize_name(name)}.toml"
    return next((d / file for d in dirs if (d / file).is_file()), dirs[0] / file)


def load_recipe(
    name: str, version: str, recipes_dir: RecipeDirs, target: TargetLike | None = None
) -> Recipe:
    """The recipe for `name` resolved for `version` (and `target`), from the first folder that
    has one; the defaults when none has."""
    _check_version(version)
    path = recipe_path(name, recipes_dir)
    if not path.is_file():
        recipe = Recipe(name=canonicalize_name(name), version=version)
        return recipe.for_target(target) if target is not None else recipe
    return read_recipe(path, version, target)


def read_recipe(path: Path, version: str, target: TargetLike | None = None) -> Recipe:
    """Check all of `path` (every override, matching or not) and resolve it for `version`."""
    _check_version(version)
    return parse_recipe(path).resolve(version, target)


def check_recipe(path: Path, honoured: frozenset[str] | None = None) -> list[ConfigError]:
    """Every mistake in `path`, each override resolved on its own on top of the base tables;
    [] when it is good. With `honoured` (the provider keys some registered provider acts on),
    a field no code acts on yet is a mistake too: what the code supports, not only the format."""
    try:
        doc = parse_recipe(path)
    except RecipeErrors as exc:
        return exc.errors
    except ConfigError as exc:
        return [exc]
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for trail in doc.paths():
        try:
            # "0" stands for any version: what is checked here does not depend on it.
            recipe = doc.build(trail, "0", None)
        except ConfigError as exc:
            if exc.message not in seen:
                seen.add(exc.message)
                errors.append(exc)
            continue
        if honoured is None:
            continue
        for gap in (*recipe.not_built_yet(), *recipe.not_honoured("any provider", honoured)):
            if gap not in seen:
                seen.add(gap)
                errors.append(
                    ConfigError(
                        f"{show(path)}: {gap}",
                        fix="drop the field, or build from a local source with --sdist "
                        "(a [source] field); cbuild refuses it at build time",
                    )
                )
    return errors


def parse_recipe(path: Path) -> Document:
    """Read and check every table of a recipe file; RecipeErrors lists all it found."""
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f":{m[1]}" if m else ""
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        col = f" (column {m[2]})" if m else ""
        raise ConfigError(f"{show(path)}{where}: invalid TOML: {reason}{col}") from exc

    errors: list[ConfigError] = []
    root = _check_table(path, text, (), data, errors)

    pkg = Where(path, text, ("package",), "name")
    name = root.values.get(("package", "name"))
    if name is None and not any("[package] name" in e.message for e in errors):
        errors.insert(
            0, pkg.error("missing [package] name", fix=f'add name = "{path.stem}" under [package]')
        )
    elif name is not None and canonicalize_name(name) != canonicalize_name(path.stem):
        errors.insert(
            0,
            pkg.error(
                f"[package] name {name!r} does not match the file name",
                fix=f"a recipe for {name!r} belongs in {canonicalize_name(name)}.toml",
            ),
        )
    if errors:
        raise RecipeErrors(errors)
    return Document(path, text, canonicalize_name(name), root)


def _check_table(
    path: Path,
    text: str,
    prefix: tuple[str, ...],
    data: dict[str, Any],
    errors: list[ConfigError],
) -> Table:
    """Validate one table (the file, or an override table at TOML path `prefix`): its sections,
    and recursively its override tables. Mistakes go to `errors`; checking goes on."""
    table = Table(prefix, {})
    valid_top = [*SECTIONS, *OVERRIDES]
    for section, content in data.items():
        where = Where(path, text, prefix, section)
        if section in OVERRIDES:
            if not isinstance(content, dict):
                errors.append(
                    where.error(
                        f"{section!r} {where.place} must be a table of tables, "
                        f"not {type_name(content)}"
                    )
                )
                continue
            for selector, sub in content.items():
                sel_where = Where(path, text, (*prefix, section), selector)
                try:
                    _check_selector(section, selector, sel_where)
                except ConfigError as exc:
                    errors.append(exc)
                    continue
                if not isinstance(sub, dict):
                    errors.append(
                        sel_where.error(
                            f"{sel_where.section[:-1]}.{quote(selector)}] must be a "
                            f"table, not {type_name(sub)}"
                        )
                    )
                    continue
                child = _check_table(path, text, (*prefix, section, selector), sub, errors)
                table.children.append((section, selector, child))
            continue
        if section not in SECTIONS:
            errors.append(_unknown(path, text, prefix, section, valid_top))
            continue
        if not isinstance(content, dict):
            errors.append(where.error(f"{where.key!r} must be a table, not {type_name(content)}"))
            continue
        for key, value in content.items():
            key_where = Where(path, text, (*prefix, section), key)
            spec = SECTIONS[section].get(key)
            if spec is None:
                errors.append(
                    _unknown(path, text, (*prefix, section), key, list(SECTIONS[section]))
                )
                continue
            if prefix and not spec.overridable:
                errors.append(
                    key_where.error(f"[{section}] {key} cannot be overridden per version or target")
                )
                continue
            try:
                table.values[(section, key)] = spec.check(value, key_where)
            except ConfigError as exc:
                errors.append(exc)
        if section == "source":
            given = [k for k, v in content.items() if k in ("url", "git", "binary_wheel") and v]
            if len(given) > 1:
                errors.append(
                    Where(path, text, (*prefix, section), given[1]).error(
                        f"[source] {' and '.join(given)} exclude each other",
                        fix="a recipe builds from one source: PyPI's sdist (default), a url, a git "
                        "repository, or PyPI's binary wheel",
                    )
                )
    return table


_GLOB = re.compile(r"!?[A-Za-z0-9*?._\[\]-]+\Z")


def _check_selector(kind: str, selector: str, where: Where) -> None:
    if kind == "versions":
        if not selector.strip():
            raise where.error(
                "empty version specifier in [versions]", fix='e.g. [versions."<1.80"]'
            )
        try:
            SpecifierSet(selector)
        except InvalidSpecifier as exc:
            raise where.error(
                f"invalid version specifier {selector!r} in [versions]",
                fix=f'use PEP 440 specifiers, e.g. [versions."=={selector}"] or '
                '[versions.">=1.80,<2"]',
            ) from exc
        return
    if not _GLOB.match(selector):
        what = "accelerator" if kind == "accelerators" else "target id"
        raise where.error(
            f"{selector!r} in [{kind}] is not a {what} pattern",
            fix='e.g. [targets."gentoo2023-x86-64-v4"], [targets."gentoo2023-*"], '
            '[accelerators."cuda*"]; "!" in front negates',
        )


def _check_version(version: str) -> None:
    try:
        Version(version)
    except InvalidVersion as exc:
        raise ConfigError(f"{version!r} is not a valid version (PEP 440)") from exc


def _unknown(
    path: Path, text: str, table: tuple[str, ...], key: str, valid: list[str]
) -> ConfigError:
    where = Where(path, text, table, key)
    close = (
        difflib.get_close_matches(key.lower(), valid, n=1)
        or [
            # A valid key inside the typo (apt_packages -> apt), or the typo inside a key.
            v
            for v in valid
            if v in key.lower() or key.lower() in v
        ][:1]
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return where.error(
        f"unknown key {key!r} {where.place}{hint}",
        fix=f"valid keys {where.place}: {', '.join(valid)}",
    )
