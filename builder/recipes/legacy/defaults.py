"""build_wheel.sh's defaults that a converted recipe must state: the legacy script loads them
for every build, and cbuild loads nothing a recipe does not name."""

from __future__ import annotations

import re
from typing import Any

from packaging.requirements import Requirement

from builder.recipes.legacy.expand import _Expander, _Scope
from builder.recipes.legacy.variables import Unconvertible

Tables = dict[tuple[tuple[str, str], ...], dict[str, dict[str, Any]]]  # per condition


def _test_field(tables: Tables, scope: _Scope, key: str) -> Any:
    """[test] `key` as it applies in `scope`: its own table's, else the nearest enclosing."""
    s: _Scope | None = scope
    while s is not None:
        if (value := tables.get(s.atoms, {}).get("test", {}).get(key)) is not None:
            return value
        s = s.parent
    return None


def default_pytest(tables: Tables, scope: _Scope, exp: _Expander) -> None:
    """build_wheel.sh keeps its default modules, pytest among them, loaded for the test unless
    the config replaces MODULE_BUILD_DEPS_DEFAULT; test code uses pytest without naming it
    (Bottleneck's `bottleneck.test()`). So `pytest` joins [test] requires wherever test code
    runs. (PYTHON_DEPS_DEFAULT's setuptools stays out: a wheel that imports it undeclared is
    broken for its users, and its test should say so.)"""
    own = tables.get(scope.atoms, {}).get("test", {})
    if not own.keys() & {"python", "commands", "requires"}:
        return  # this scope decides nothing of the test: the enclosing one's table applies
    if not (_test_field(tables, scope, "python") or _test_field(tables, scope, "commands")):
        return
    if (defaults := scope.lookup("MODULE_BUILD_DEPS_DEFAULT")) is not None:
        try:
            if "pytest" not in re.split(r"[\s/]+", exp.expand(defaults.value, scope, "plain")):
                return
        except Unconvertible:
            return  # reported where the variable itself is converted
    reqs = list(_test_field(tables, scope, "requires") or [])
    if not any(Requirement(r).name.lower() == "pytest" for r in reqs):
        tables.setdefault(scope.atoms, {}).setdefault("test", {})["requires"] = [*reqs, "pytest"]
