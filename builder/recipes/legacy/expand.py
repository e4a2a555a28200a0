"""Expansion of legacy variables as the shell does when the config is sourced, and the `if`
conditions (stack year, version) that become override tables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from builder.recipes.legacy.shell import Word
from builder.recipes.legacy.variables import (
    _DEFAULTS_VARS,
    _STACK_VAR,
    BUILDER_ENV,
    LEGACY_ENV,
    LEGACY_VARIABLES,
    Unconvertible,
)

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Binding:
    """One assignment: its value, its line, and what the name held before it (so that
    `PYTHON_DEPS="$PYTHON_DEPS x"` expands the earlier value, as the shell does)."""

    value: Word
    line: int
    prev: Binding | None


Shadow = dict[str, "Binding | None"]  # names whose own earlier binding must be used


@dataclass
class _Scope:
    """Variables assigned under one condition (a tuple of (kind, selector) atoms)."""

    atoms: tuple[tuple[str, str], ...]
    vars: dict[str, Binding] = field(default_factory=dict)
    parent: _Scope | None = None

    def lookup(self, name: str) -> Binding | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.vars:
                return scope.vars[name]
            scope = scope.parent
        return None

    def within(self, other: _Scope) -> bool:
        scope: _Scope | None = self
        while scope is not None and scope is not other:
            scope = scope.parent
        return scope is other

    def assign(self, name: str, value: Word, line: int) -> None:
        self.vars[name] = Binding(value, line, self.lookup(name))


class _Expander:
    def __init__(self, package: str) -> None:
        self.package = package

    def expand(self, word: Word, scope: _Scope, mode: str, shadow: Shadow | None = None) -> str:
        """mode "plain": a value for a typed field; "template": the same with {version};
        "shell": a command, where unknown variables stay for the shell to expand."""
        out = []
        for kind, text in word.parts:
            if kind == "lit":
                out.append(self._escape(text, mode))
                continue
            out.append(self._expand_text(text, scope, mode, shadow or {}, "".join(out)))
        return "".join(out)

    def _escape(self, text: str, mode: str) -> str:
        return text.replace("{", "{{").replace("}", "}}") if mode == "template" else text

    def _expand_text(
        self, text: str, scope: _Scope, mode: str, shadow: Shadow, before: str = ""
    ) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            if text.startswith("\\$", i):
                # `\$X` stores `$X` in the value, which the legacy script evals at build time.
                out.append("$")
                i += 2
                continue
            if text.startswith("$(", i) or text[i] == "`":
                # Unquoted or in double quotes: bash ran it when it read the config, where
                # the build's shell would run it later, elsewhere.
                raise Unconvertible(
                    "a command substitution that bash ran when it read the config (escape it "
                    "as \\$( or single-quote it to run it in the build)"
                )
            m = _VAR.match(text, i)
            if not m:
                out.append(self._escape(text[i], mode))
                i += 1
                continue
            name = m["braced"] or m["plain"]
            op = m["op"] or ""
            quoted = _in_single_quotes(before + "".join(out))
            out.append(self._variable(name, op, m[0], scope, mode, shadow, quoted))
            i = m.end()
        return "".join(out)

    def _variable(
        self,
        name: str,
        op: str,
        raw: str,
        scope: _Scope,
        mode: str,
        shadow: Shadow,
        quoted: bool = False,
    ) -> str:
        """The value bash gave `raw` when it read the config. In a command, $VERSION stays for
        the build's shell, quoted so that it still expands where the text is single-quoted."""
        if name == "VERSION":
            m = re.fullmatch(r":?(?:\?.*|\+(.*))?", op, re.S)
            if not m:
                raise Unconvertible(f"the expansion {raw} is shell logic")
            if m[1] is not None:  # ${VERSION:+x}: the version is always set
                return self._expand_text(m[1], scope, mode, shadow)
            if mode == "template":
                return "{version}"
            if mode == "shell":
                return "'\"${VERSION}\"'" if quoted else "${VERSION}"
            raise Unconvertible(
                "uses $VERSION where a fixed value is needed (a [versions] table can hold it)"
            )
        if name in ("WHEEL_NAME", "ARCHNAME") and not scope.lookup(name):
            raise Unconvertible(
                f"${name} is empty when bash reads the config (build_wheel.sh sets it later): "
                f"escape it as \\${name} to use the build's value"
            )
        try:
            value = self._value(name, raw, scope, mode, shadow)
        except Unconvertible:
            if mode != "shell" or (quoted and op):
                raise
            # The build's shell expands it instead; where the text is single-quoted, the
            # quotes open around it so that it still expands, as it did when bash read it.
            return raw if not quoted else f"'\"${{{name}}}\"'"
        m = re.fullmatch(r"(:?)([-+?=])(.*)", op, re.S) if op else None
        if op and not m:
            raise Unconvertible(f"the expansion {raw} is shell logic")
        if m:
            empty = value is None or (m[1] == ":" and value == "")
            sign, word = m[2], m[3]
            if sign == "+":
                return "" if empty else self._expand_text(word, scope, mode, shadow)
            if sign in "-=" and empty:
                return self._expand_text(word, scope, mode, shadow)
            if sign == "?" and empty:
                raise Unconvertible(f"{raw} stops the legacy script: ${name} is not set")
        return value or ""

    def _value(self, name: str, raw: str, scope: _Scope, mode: str, shadow: Shadow) -> str | None:
        """A variable's value when the config is read; None: unset."""
        binding = shadow[name] if name in shadow else scope.lookup(name)
        if name == "PACKAGE" and binding is None:
            return self.package
        if binding is not None:
            return self.expand(binding.value, scope, mode, {**shadow, name: binding.prev})
        if name in ("PACKAGE_FOLDER_NAME", "PACKAGE_DOWNLOAD_NAME", "PYTHON_IMPORT_NAME"):
            return self.package  # build_wheel.sh's defaults
        if name in BUILDER_ENV:
            return BUILDER_ENV[name]

        if name in shadow or name in LEGACY_VARIABLES or name in _DEFAULTS_VARS:
            return None  # unset, as build_wheel.sh leaves it
        if LEGACY_ENV.fullmatch(name) or raw[1:2] != "{" or raw == f"${{{name}}}":
            raise Unconvertible(
                f"uses ${name}, which bash expanded from the legacy build environment when it "
                "read the config"
            )
        return None  # an operator's knob (${TORCH_VERSION:+...}): unset by default


def _in_single_quotes(text: str) -> bool:
    """Whether the end of shell text `text` is inside single quotes."""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote else c
        i += 1
    return quote == "'"


def _raise(message: str) -> str:
    raise Unconvertible(message)


# --- conditions -------------------------------------------------------------------------------


_OTHER = "a condition other than comparisons of the stack year or the version"
# `translate_version` (build_wheel.sh) turns a release version into one comparable number.
_TRANSLATED = re.compile(r"(?:10#)?\$\(translate_version ['\"]?(\$\{?VERSION\}?|[\d.]+)['\"]?\s*\)")
_NUMERIC = {"-lt": "<", "-le": "<=", "-gt": ">", "-ge": ">=", "-eq": "==", "-ne": "!="}
# Always set when cbuild resolves a recipe (a gentoo stack, a version), and the script that
# reads the config is build_wheel.sh: tests of these are constants.
_ALWAYS_SET = {"EBROOTGENTOO", "VERSION"}
NEVER = ("never", "")  # the atom of a branch bash never takes: dropped, nothing lost


def _condition(words: tuple[Word, ...]) -> list[tuple[str, str]]:
    """`[[ $EBVERSIONGENTOO == 2023 ]] && [[ ... ]]` -> the atoms that all hold: stack year
    (`("targets", "gentoo2023-*")`), version (`("versions", "<1.2")`), nothing for a test that
    always holds, NEVER for one that never does. Unconvertible for anything else."""
    tests: list[list[Word]] = [[]]
    close = None
    for w in words:
        lit = w.literal if all(k != "lit" for k, _ in w.parts) else None
        if close is None and lit in ("[[", "["):
            close = "]]" if lit == "[[" else "]"
        elif close is not None and lit == close:
            close = None
        elif lit == "&&":
            tests.append([])
        elif close is None or lit in ("||", "!", "-o", "-a"):
            raise Unconvertible(_OTHER)
        else:
            tests[-1].append(w)
    atoms: list[tuple[str, str]] = []
    for test in tests:
        atoms += _test(test)
    return [NEVER] if NEVER in atoms else atoms


def _test(words: list[Word]) -> list[tuple[str, str]]:
    lits = [w.literal for w in words]
    var = lambda t: m[1] if (m := re.fullmatch(r"\$\{?([A-Za-z_]\w*)\}?", t)) else None  # noqa: E731
    if len(lits) == 2 and lits[0] in ("-n", "-z") and var(lits[1]) in _ALWAYS_SET:
        return [] if lits[0] == "-n" else [NEVER]
    if len(lits) != 3:
        raise Unconvertible(_OTHER)
    left, op, right = lits
    if var(left) == "THIS_SCRIPT" and op in ("==", "=", "!=") and "$" not in right:
        return [] if (right == "build_wheel.sh") == (op != "!=") else [NEVER]
    tl, tr = _TRANSLATED.fullmatch(left), _TRANSLATED.fullmatch(right)
    if tl and tr and op in _NUMERIC and var(tl[1]) == "VERSION" and "$" not in tr[1]:
        return [("versions", f"{_NUMERIC[op]}{tr[1].strip('.')}")]
    name = var(left)
    if name not in (_STACK_VAR, "VERSION") or "$" in right:
        raise Unconvertible(_OTHER)
    value = right
    if op not in ("==", "=", "!=", "-eq", "-ne"):
        raise Unconvertible(f"the comparison {op!r} (only ==, != convert)")
    negate = op in ("!=", "-ne")
    if name == _STACK_VAR:
        if not re.fullmatch(r"\d{4}", value):
            raise Unconvertible(f"stack year {value!r} is not a year")
        return [("targets", f"{'!' if negate else ''}gentoo{value}-*")]
    # A version: exact, or a trailing .* glob (PEP 440 prefix match); other globs do not map.
    unquoted_glob = any(k == "bare" and "*" in t for k, t in words[2].parts)
    if unquoted_glob:
        if not re.fullmatch(r"\d+(\.\d+)*\.\*", value):
            raise Unconvertible(f"the version pattern {value!r} has no PEP 440 form")
    else:
        try:
            Version(value)
        except InvalidVersion as exc:
            raise Unconvertible(f"{value!r} is not a version") from exc
    return [("versions", f"{'!=' if negate else '=='}{value}")]


def _negate(atoms: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not atoms:
        return [NEVER]
    if atoms == [NEVER]:
        return []
    if len(atoms) != 1:
        raise Unconvertible("an else after a condition of several parts")
    kind, sel = atoms[0]
    if kind == "targets":
        return [(kind, sel[1:] if sel.startswith("!") else f"!{sel}")]
    if m := re.fullmatch(r"(==|!=|<=|>=|<|>)(.*)", sel):
        opposite = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
        return [(kind, f"{opposite[m[1]]}{m[2]}")]
    raise Unconvertible(f"an else after {sel!r}")


def _nest(atoms: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Adjacent version atoms merge into one specifier (a comma is AND); a negated stack is
    dropped where a chain already names another stack (the elif of `== 2026` / `== 2023`)."""
    stacks = {sel for kind, sel in atoms if kind == "targets" and not sel.startswith("!")}
    out: list[tuple[str, str]] = []
    for kind, sel in atoms:
        if kind == "targets" and sel.startswith("!") and stacks - {sel[1:]}:
            continue
        if out and kind == "versions" and out[-1][0] == "versions":
            out[-1] = (kind, f"{out[-1][1]},{sel}")
        else:
            out.append((kind, sel))
    return tuple(out)
