"""What a package requires, known before its build or not (PEP 643 / PEP 621), and the
target's marker values; a recipe's [wheel] edits applied the way repair applies them."""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import ConfigError
from builder.recipes import load_recipe
from builder.sources import pypi
from builder.targets.model import Target
from builder.wheels import edit as wheeledit
from builder.wheels import repair


def marker_env(python: str) -> dict[str, str]:
    """PEP 508 marker values of a target: Linux x86_64, CPython `python` ("3.11"). The micro
    version is unknown here; ".0" makes `python_full_version >= "3.11.4"` false, the safe side."""
    full = f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": python,
        "sys_platform": "linux",
        "extra": "",
    }


@dataclass(frozen=True)
class Requires:
    requirements: tuple[str, ...]  # PEP 508, as written; a hint only when not `known`
    known: bool  # authoritative before the build
    source: str  # where they came from, for messages
    edited: bool = False  # a built wheel's: repair and the recipe's [wheel] edits already applied


def sdist_requires(sdist: Path) -> Requires:
    """What a package version requires, read from its sdist without building it."""
    facts = pypi.sdist_facts(sdist)
    raw = pypi._read_member(sdist, f"{facts.top_folder}/PKG-INFO")
    meta: dict[str, Any] = {}
    if raw is not None:
        meta, _ = parse_email(raw)
    listed = tuple(meta.get("requires_dist", ()))
    mv = meta.get("metadata_version", "")
    dynamic = {d.lower() for d in meta.get("dynamic", ())}
    with contextlib.suppress(InvalidVersion):
        if Version(mv) >= Version("2.2") and "requires-dist" not in dynamic:
            return Requires(listed, True, f"PKG-INFO {mv}")
    static = _pyproject_requires(sdist, facts.top_folder)
    if static is not None:
        return Requires(static, True, "pyproject.toml [project] dependencies")
    if raw is None:
        why = "no PKG-INFO"
    elif "requires-dist" in dynamic:
        why = f"PKG-INFO {mv} marks Requires-Dist dynamic"
    else:
        why = f"PKG-INFO {mv or '?'}: before 2.2, the build may change Requires-Dist"
    hint = f", which lists {', '.join(listed)}" if listed else ""
    return Requires(listed, False, f"unknown before the build ({why}{hint})")


def _pyproject_requires(sdist: Path, top: str) -> tuple[str, ...] | None:
    raw = pypi._read_member(sdist, f"{top}/pyproject.toml")
    if raw is None:
        return None
    try:
        project = tomllib.loads(raw.decode()).get("project")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        return None
    reqs = list(project.get("dependencies", []))
    if "optional-dependencies" not in project.get("dynamic", []):
        for extra, items in project.get("optional-dependencies", {}).items():
            reqs += [_with_extra(r, extra) for r in items]
    return tuple(reqs)


def _with_extra(text: str, extra: str) -> str:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return text  # kept as written; planning reports it
    cond = f'extra == "{canonicalize_name(extra)}"'
    marker = f"({req.marker}) and {cond}" if req.marker else cond
    req.marker = None
    return f"{req}; {marker}"


def wheel_requires(wheels: Iterable[Path]) -> Requires:
    """The requirements of built wheels (every target's: markers may differ), the truth."""
    out = dict.fromkeys(r for w in wheels for r in repair.requires_dist(w))
    return Requires(tuple(out), True, "the built wheel's METADATA", edited=True)


# A recipe's [wheel] edits, and repair's, change what the placed wheel requires.
Edits = Callable[[str, str, Target, list[str]], list[str]]


def no_edits(name: str, version: str, target: Target, reqs: list[str]) -> list[str]:
    return reqs


def recipe_edits(recipes_dir: Path) -> Edits:
    def edit(name: str, version: str, target: Target, reqs: list[str]) -> list[str]:
        try:
            recipe = load_recipe(name, version, recipes_dir, target)
        except ConfigError:
            recipe = None  # a bad recipe fails the package's own build, with its message
        remove = ("nvidia-*", *(recipe.remove_requires if recipe else ()))
        edits = wheeledit.WheelEdits(
            add=recipe.add_requires if recipe else (),
            remove=remove,
            update=recipe.update_requires if recipe else (),
        )
        return wheeledit.edit_requirements(reqs, edits)[0]

    return edit
