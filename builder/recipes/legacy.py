"""Import of the legacy shell configs (`config/<pkg>.sh`, sourced by build_wheel.sh) as recipes.

What converts: variable assignments of the ~30 legacy variables, `${VERSION}` uses, and
`if`/`elif`/`else` on the stack year (`$EBVERSIONGENTOO == 2023`) or on the version
(`$VERSION == 1.2.*`), which become `[targets."gentoo2023-*"]` and `[versions."==1.2.*"]`
override tables (nested for nested conditions, negated for `else`). Known idioms convert too:
the git-clone-then-tar download becomes `[source] git`, manipulate_wheels.py calls become
`[wheel]` edits, `export NAME=value` in build commands becomes `[build] env`.

What does not convert is listed per file with its line and the reason, never guessed:
arbitrary shell at the top level, `exit`, calls to other scripts, command substitutions where a
typed field is needed, variables only the legacy build environment sets, conditions other than
the stack year and the version, and a URL source whose sha256 the config does not record.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import ConfigError
from builder.recipes.recipe import PATCHES_DIR, SECTIONS, check_recipe, recipe_path, to_toml

# Every variable build_wheel.sh reads from a config, and what it means (issue 4).
LEGACY_VARIABLES = {
    "PYTHON_DEPS": "extra pip packages for build and test",
    "MODULE_BUILD_DEPS": "stack modules at build",
    "MODULE_RUNTIME_DEPS": "stack modules at build and test",
    "PRE_DOWNLOAD_COMMANDS": "shell before the download",
    "PACKAGE_DOWNLOAD_ARGUMENT": "what to download (name, URL or repository)",
    "PACKAGE_DOWNLOAD_NAME": "download file name",
    "PACKAGE_DOWNLOAD_METHOD": "how to download (pip, Git, ...)",
    "PACKAGE_DOWNLOAD_CMD": "the download command",
    "POST_DOWNLOAD_COMMANDS": "shell after the download",
    "PACKAGE_FOLDER_NAME": "top folder in the archive",
    "PATCHES": "patch files, applied in order",
    "PRE_BUILD_COMMANDS": "shell before the build",
    "BDIST_WHEEL_ARGS": "setup.py bdist_wheel arguments",
    "PIP_WHEEL_ARGS": "pip wheel arguments",
    "POST_BUILD_COMMANDS": "shell after the build",
    "UPDATE_REQUIREMENTS": "requirement updates on the built wheel",
    "RPATH_TO_ADD": "RPATH additions",
    "RPATH_ADD_ORIGIN": "add $ORIGIN to the RPATH",
    "PYTHON_IMPORT_NAME": "import name",
    "PYTHON_TESTS": "Python run after the import",
    "TEST_COMMAND": "replaces the import test",
    "PRE_TEST_COMMANDS": "shell before the tests",
    "PACKAGE_SUFFIX": "distribution name suffix",
    "PYTHON_VERSIONS": "the Pythons to build for",
    "PATCH_WHEEL_COMMANDS": "shell on the wheel archive",
}
# Also read by build_wheel.sh; their cbuild meaning is simple enough to convert.
_DEFAULTS_VARS = {"PYTHON_DEPS_DEFAULT", "MODULE_BUILD_DEPS_DEFAULT"}
_STACK_VAR = "EBVERSIONGENTOO"


class Unconvertible(Exception):
    """Why one statement or value has no faithful recipe form."""


@dataclass(frozen=True)
class Skipped:
    line: int
    text: str
    reason: str


@dataclass
class LegacyResult:
    config: Path
    name: str  # the package, from the file name
    recipe: Path | None = None
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the written recipe failed its check
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return not self.skipped and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "recipe": str(self.recipe) if self.recipe else None,
            "whole": self.whole,
            "not_converted": [s.__dict__ for s in self.skipped],
            "errors": self.errors,
        }


# --- a small lexer for the shell these configs are written in -----------------------------------


@dataclass(frozen=True)
class Word:
    """A shell word as segments: ("lit", text) from single quotes or escapes, ("dq", text)
    from double quotes, ("bare", text) unquoted. Expansions live in dq and bare segments."""

    parts: tuple[tuple[str, str], ...]
    raw: str

    @property
    def literal(self) -> str:
        return "".join(t for _, t in self.parts)


@dataclass(frozen=True)
class Statement:
    line: int
    words: tuple[Word, ...]
    raw: str


def _read_subst(text: str, i: int) -> int:
    """The index after a `$(...)` that starts at text[i] == '$'; quotes inside respected."""
    depth, i = 1, i + 2
    while i < len(text) and depth:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = text.index("'", i + 1) + 1 if "'" in text[i + 1 :] else len(text)
            continue
        if c == '"':
            i = _read_dq(text, i + 1)[1]
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
    if depth:
        raise Unconvertible("unterminated $(...)")
    return i


def _read_dq(text: str, i: int) -> tuple[str, int]:
    """Contents of a double-quoted string starting after its quote; (contents, index after)."""
    out = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\`\n':
            out.append(text[i + 1] if text[i + 1] != "\n" else "")
            i += 2
            continue
        if c == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("\\$")  # marked: a literal dollar, not an expansion
            i += 2
            continue
        if c == "$" and text[i + 1 : i + 2] == "(":
            j = _read_subst(text, i)
            out.append(text[i:j])
            i = j
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise Unconvertible("unterminated double quote")


def statements(text: str) -> Iterator[Statement | Skipped]:
    """Split shell text into simple statements (words), yielding Skipped for what cannot be
    split faithfully. `;`, `&&` and newlines end statements; keywords are ordinary words."""
    i, line = 0, 1
    words: list[Word] = []
    parts: list[tuple[str, str]] = []
    start_i, start_line = 0, 1
    raw_start = 0

    def end_word() -> None:
        nonlocal parts, raw_start
        if parts:
            words.append(Word(tuple(parts), text[raw_start:i]))
        parts = []

    def end_statement() -> Statement | None:
        nonlocal words
        end_word()
        st = Statement(start_line, tuple(words), text[start_i:i].strip()) if words else None
        words = []
        return st

    while i < len(text):
        c = text[i]
        if not parts and not words:
            start_i, start_line = i, line
        if c == "#" and not parts:
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if c in " \t":
            end_word()
            i += 1
            continue
        if c in "\n;" or text.startswith("&&", i) or text.startswith("||", i) or c == "|":
            op = "&&" if text.startswith("&&", i) else "||" if text.startswith("||", i) else c
            if op in ("&&", "||") and words and words[0].literal in ("if", "elif"):
                end_word()  # part of the condition, which then does not convert
                words.append(Word((("bare", op),), op))
                i += 2
                continue
            if op in ("||", "|") and (words or parts):
                # A pipeline or an `||` fallback is shell logic: the whole line is skipped.
                end = text.find("\n", i)
                end = len(text) if end == -1 else end
                yield Skipped(start_line, text[start_i:end].strip(), "shell logic (| or ||)")
                words, parts = [], []
                line += text.count("\n", i, end)
                i = end
                continue
            st = end_statement()
            if st:
                yield st
            line += c == "\n"
            i += len(op)
            continue
        if not parts:
            raw_start = i
        try:
            if c == "\\":
                if text[i + 1 : i + 2] == "\n":
                    line += 1
                else:
                    parts.append(("lit", text[i + 1 : i + 2]))
                i += 2
            elif c == "'":
                j = text.find("'", i + 1)
                if j == -1:
                    raise Unconvertible("unterminated single quote")
                parts.append(("lit", text[i + 1 : j]))
                line += text.count("\n", i, j)
                i = j + 1
            elif c == '"':
                content, j = _read_dq(text, i + 1)
                parts.append(("dq", content))
                line += text.count("\n", i, j)
                i = j
            elif c == "$" and text[i + 1 : i + 2] == "(":
                j = _read_subst(text, i)
                parts.append(("bare", text[i:j]))
                line += text.count("\n", i, j)
                i = j
            else:
                j = i
                while (
                    j < len(text)
                    and text[j] not in " \t\n;|&'\"\\#"
                    and not (text[j] == "$" and text[j + 1 : j + 2] == "(")
                ):
                    j += 1
                if j == i:  # a lone & (background) or similar
                    j = i + 1
                parts.append(("bare", text[i:j]))
                i = j
        except Unconvertible as exc:
            yield Skipped(start_line, text[start_i:].strip().splitlines()[0], str(exc))
            return
    st = end_statement()
    if st:
        yield st


_CLOSERS = {"for": "done", "while": "done", "until": "done", "case": "esac", "select": "done"}


def _block_closer(st: Statement) -> str | None:
    """The word that ends the block `st` opens (loops, case, functions), or None."""
    words = [w.literal for w in st.words]
    if words[0] in _CLOSERS:
        return _CLOSERS[words[0]]
    if (
        words[0] == "function"
        or re.fullmatch(r"[A-Za-z_][\w-]*(\(\))?", words[0])
        and (words[0].endswith("()") or words[1:2] == ["()"])
    ):
        return "}"
    return None


def _keywords_apart(items: Iterator[Statement | Skipped]) -> Iterator[Statement | Skipped]:
    """`then X=1` and `else X=1` on one line: the keyword, then the statement."""
    for st in items:
        keyword = isinstance(st, Statement) and st.words[0].literal in ("then", "else", "do")
        if keyword and len(st.words) > 1:
            yield Statement(st.line, st.words[:1], st.words[0].literal)
            yield Statement(st.line, st.words[1:], st.raw.split(None, 1)[1])
        else:
            yield st


# --- expansion --------------------------------------------------------------------------------

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
            out.append(self._expand_text(text, scope, mode, shadow or {}))
        return "".join(out)

    def _escape(self, text: str, mode: str) -> str:
        return text.replace("{", "{{").replace("}", "}}") if mode == "template" else text

    def _expand_text(self, text: str, scope: _Scope, mode: str, shadow: Shadow) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            if text.startswith("\\$", i):
                # `\$X` stores `$X` in the value, which the legacy script evals at build time.
                out.append("$")
                i += 2
                continue
            if text.startswith("$(", i) or text[i] == "`":
                if mode == "shell":
                    j = _read_subst(text, i) if text[i] == "$" else text.index("`", i + 1) + 1
                    out.append(text[i:j])
                    i = j
                    continue
                raise Unconvertible("command substitution, which only the legacy script runs")
            m = _VAR.match(text, i)
            if not m:
                out.append(self._escape(text[i], mode))
                i += 1
                continue
            name = m["braced"] or m["plain"]
            op = m["op"] or ""
            out.append(self._variable(name, op, m[0], scope, mode, shadow))
            i = m.end()
        return "".join(out)

    def _variable(
        self, name: str, op: str, raw: str, scope: _Scope, mode: str, shadow: Shadow
    ) -> str:
        if op and not op.startswith(":?"):
            if mode == "shell":
                return raw
            raise Unconvertible(f"the expansion {raw} is shell logic")
        if name == "VERSION":
            return {"template": "{version}", "shell": "$VERSION"}.get(mode) or _raise(
                "uses $VERSION where a fixed value is needed (a [versions] table can hold it)"
            )
        if name == "PACKAGE":
            return self.package
        binding = shadow[name] if name in shadow else scope.lookup(name)
        if binding is not None:
            return self.expand(binding.value, scope, mode, {**shadow, name: binding.prev})
        if name in ("PACKAGE_FOLDER_NAME", "PACKAGE_DOWNLOAD_NAME", "PYTHON_IMPORT_NAME"):
            return self.package  # build_wheel.sh's defaults
        if name in shadow or name in LEGACY_VARIABLES or name in _DEFAULTS_VARS:
            return ""  # unset, as build_wheel.sh leaves it
        if mode == "shell":
            return raw
        raise Unconvertible(f"uses ${name}, which only the legacy build environment sets")


def _raise(message: str) -> str:
    raise Unconvertible(message)


# --- conditions -------------------------------------------------------------------------------


def _condition(words: tuple[Word, ...]) -> list[tuple[str, str]]:
    """`[[ $EBVERSIONGENTOO == 2023 ]]` -> [("targets", "gentoo2023-*")]; raises Unconvertible
    for anything but a comparison of the stack year or the version with a constant."""
    lits = [w.literal for w in words]
    if len(lits) != 5 or lits[0] not in ("[[", "[") or lits[4] not in ("]]", "]"):
        raise Unconvertible("a condition other than one comparison of the stack year or version")
    left, op, right = words[1], lits[2], words[3]
    var = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", left.literal)
    if not var or var[1] not in (_STACK_VAR, "VERSION") or "$" in right.literal:
        raise Unconvertible("a condition other than one comparison of the stack year or version")
    value = right.literal
    if op not in ("==", "=", "!=", "-eq", "-ne"):
        raise Unconvertible(f"the comparison {op!r} (only ==, != convert)")
    negate = op in ("!=", "-ne")
    if var[1] == _STACK_VAR:
        if not re.fullmatch(r"\d{4}", value):
            raise Unconvertible(f"stack year {value!r} is not a year")
        return [("targets", f"{'!' if negate else ''}gentoo{value}-*")]
    # A version: exact, or a trailing .* glob (PEP 440 prefix match); other globs do not map.
    unquoted_glob = any(k == "bare" and "*" in t for k, t in right.parts)
    spec = value
    if unquoted_glob:
        if not re.fullmatch(r"\d+(\.\d+)*\.\*", value):
            raise Unconvertible(f"the version pattern {value!r} has no PEP 440 form")
    else:
        try:
            Version(value)
        except InvalidVersion as exc:
            raise Unconvertible(f"{value!r} is not a version") from exc
    return [("versions", f"{'!=' if negate else '=='}{spec}")]


def _negate(atoms: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if len(atoms) != 1:
        raise Unconvertible("an else after a condition of several parts")
    kind, sel = atoms[0]
    if kind == "targets":
        return [(kind, sel[1:] if sel.startswith("!") else f"!{sel}")]
    return [
        (kind, sel.replace("==", "!=", 1) if sel.startswith("==") else sel.replace("!=", "==", 1))
    ]


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


# --- conversion ---------------------------------------------------------------------------------


class _Converter:
    def __init__(self, config: Path, package: str, patches_dir: Path | None) -> None:
        self.config = config
        self.package = package
        self.patches_dir = patches_dir
        self.exp = _Expander(package)
        self.skipped: list[Skipped] = []
        self.tables: dict[tuple[tuple[str, str], ...], dict[str, dict[str, Any]]] = {}
        self.patch_files: dict[str, Path] = {}
        self.scopes: list[_Scope] = []  # in file order, so tables come out in file order
        self.exported: set[tuple[int, str]] = set()  # (id of the scope, name) of `export NAME=`
        self.text = ""
        self.shadow: Shadow = {}

    def x(self, word: Word, scope: _Scope, mode: str) -> str:
        """Expand a value of the variable being converted (its own name means its earlier
        value)."""
        return self.exp.expand(word, scope, mode, self.shadow)

    def scope(self, atoms: tuple[tuple[str, str], ...], parent: _Scope | None) -> _Scope:
        s = _Scope(atoms, parent=parent)
        self.scopes.append(s)
        return s

    def skip(self, line: int, text: str, reason: str) -> None:
        first = text.strip().splitlines()[0] if text.strip() else text
        more = " ..." if len(text.strip().splitlines()) > 1 else ""
        self.skipped.append(Skipped(line, first + more, reason))

    def run(self, text: str) -> None:
        self.text = text
        root = self.scope((), None)
        scopes: list[_Scope] = [root]
        # Per open `if`: the conditions seen so far in its chain, and whether it is unusable.
        chains: list[dict[str, Any]] = []
        block: list[Any] = []  # an open loop, case or function: [closer, depth, first statement]
        for st in _keywords_apart(statements(text)):
            if isinstance(st, Skipped):
                self.skipped.append(st)
                continue
            head = st.words[0].literal
            opener = _block_closer(st)
            if block:
                block[1] += opener == block[0]
                block[1] -= head == block[0] or (block[0] == "}" and head.endswith("}"))
                if block[1] == 0:
                    first = block[2]
                    self.skip(
                        first.line, first.raw, f"shell control flow ({first.words[0].literal})"
                    )
                    block = []
                continue
            if opener:
                block = [opener, 1, st]
                if head.endswith("}"):  # a one-line function
                    self.skip(st.line, st.raw, "a shell function")
                    block = []
                continue
            if head in ("if", "elif"):
                cond_words = st.words[1:]
                if cond_words and cond_words[-1].literal == "then":
                    cond_words = cond_words[:-1]
                if head == "if":
                    chains.append({"conds": [], "bad": None, "line": st.line})
                chain = chains[-1] if chains else None
                if chain is None:
                    self.skip(st.line, st.raw, "elif without if")
                    continue
                if head == "elif":
                    scopes.pop()
                try:
                    if chain["bad"]:
                        raise Unconvertible(chain["bad"])
                    atoms = _condition(cond_words)
                    prior = [a for c in chain["conds"] for a in _negate(c)]
                    chain["conds"].append(atoms)
                    scope = self.scope(_nest((*scopes[-1].atoms, *prior, *atoms)), scopes[-1])
                except Unconvertible as exc:
                    chain["bad"] = str(exc)
                    self.skip(st.line, st.raw, f"{exc}; the branch is not converted")
                    scope = self.scope((*scopes[-1].atoms, ("dead", "")), scopes[-1])
                scopes.append(scope)
                continue
            if head == "then" and len(st.words) == 1:
                continue
            if head == "else" and len(st.words) == 1:
                if not chains:
                    self.skip(st.line, st.raw, "else without if")
                    continue
                scopes.pop()
                chain = chains[-1]
                try:
                    if chain["bad"]:
                        raise Unconvertible(chain["bad"])
                    prior = [a for c in chain["conds"] for a in _negate(c)]
                    scope = self.scope(_nest((*scopes[-1].atoms, *prior)), scopes[-1])
                except Unconvertible as exc:
                    self.skip(st.line, st.raw, f"{exc}; the branch is not converted")
                    scope = self.scope((*scopes[-1].atoms, ("dead", "")), scopes[-1])
                scopes.append(scope)
                continue
            if head == "fi" and len(st.words) == 1:
                if chains:
                    chains.pop()
                    scopes.pop()
                else:
                    self.skip(st.line, st.raw, "fi without if")
                continue
            scope = scopes[-1]
            if any(kind == "dead" for kind, _ in scope.atoms):
                self.skip(st.line, st.raw, "inside a condition that does not convert")
                continue
            self.statement(st, scope)
        if chains:
            self.skip(chains[-1]["line"], "if ...", "if without fi")
        for scope in self.scopes:
            if not any(kind == "dead" for kind, _ in scope.atoms):
                self.convert_scope(scope)

    # Statements: assignments are recorded; everything else is reported.
    def statement(self, st: Statement, scope: _Scope) -> None:
        words = list(st.words)
        exported = words[0].literal == "export" and len(words) > 1
        if exported:
            words = words[1:]
        first = words[0]
        kind, text = first.parts[0]
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", text) if kind == "bare" else None
        if m and len(words) == 1:
            name, rest = m[1], text[m.end() :]
            value = Word((("bare", rest),) * bool(rest) + first.parts[1:], first.raw[m.end() :])
            scope.assign(name, value, st.line)
            if exported and name not in LEGACY_VARIABLES:
                self.exported.add((id(scope), name))
            return
        head = first.literal
        if head == "exit" or head == "return":
            self.skip(st.line, st.raw, f"`{head}` ends the legacy build script; a recipe cannot")
        elif head in ("source", ".") or head.endswith((".sh", ".py")) or "/" in head:
            self.skip(st.line, st.raw, "calls another script, whose effect cannot be known here")
        elif head in ("for", "while", "case", "function", "until") or head.endswith("()"):
            self.skip(st.line, st.raw, f"shell control flow ({head})")
        elif head in ("module",):
            self.skip(st.line, st.raw, "module commands at the top level: use MODULE_BUILD_DEPS")
        else:
            self.skip(st.line, st.raw, "arbitrary shell at the top level")

    def set(self, atoms: tuple[tuple[str, str], ...], section: str, key: str, value: Any) -> None:
        self.tables.setdefault(atoms, {}).setdefault(section, {})[key] = value

    # --- per variable ---------------------------------------------------------------------------
    def convert_scope(self, scope: _Scope) -> None:
        atoms = scope.atoms
        own = dict(scope.vars)
        for name in [n for n in own if (id(scope), n) in self.exported]:
            b = own.pop(name)
            value, line = b.value, b.line
            self.shadow = {name: b.prev}
            try:  # an exported variable reaches the build: [build] env
                self.set_env(atoms, name, self.x(value, scope, "plain"))
            except Unconvertible as exc:
                self.skip(line, f"export {name}={value.raw}", str(exc))
        source_vars = {
            "PACKAGE_DOWNLOAD_ARGUMENT",
            "PACKAGE_DOWNLOAD_NAME",
            "PACKAGE_DOWNLOAD_METHOD",
            "PACKAGE_DOWNLOAD_CMD",
            "POST_DOWNLOAD_COMMANDS",
            "PACKAGE_FOLDER_NAME",
        }
        if own.keys() & source_vars:
            self.shadow = {}
            self.source(scope, own)
        for name, b in own.items():
            value, line = b.value, b.line
            self.shadow = {name: b.prev}
            if name in source_vars:
                continue
            handler = getattr(self, f"v_{name.lower()}", None)
            text = f"{name}={value.raw}"
            if handler is None:
                if name in LEGACY_VARIABLES:
                    raise AssertionError(name)  # every legacy variable has a handler
                if scope.lookup(name) and self._used_elsewhere(name):
                    continue  # a helper variable, expanded where it is used
                self.skip(line, text, "not a variable build_wheel.sh reads")
                continue
            try:
                handler(scope, atoms, value, line)
            except Unconvertible as exc:
                self.skip(line, text, str(exc))

    def _used_elsewhere(self, name: str) -> bool:
        return bool(re.search(rf"\${{?{name}\b", self.text))

    def words(self, value: Word, scope: _Scope, mode: str = "plain") -> list[str]:
        text = self.x(value, scope, mode)
        try:  # the legacy script word-split these values; their quotes group words
            return shlex.split(text, comments=False)
        except ValueError as exc:
            raise Unconvertible(f"cannot split {text!r} into words: {exc}") from exc

    def commands(self, value: Word, scope: _Scope) -> list[str]:
        text = self.x(value, scope, "shell")
        lines = [ln.strip() for ln in text.strip().splitlines()]
        body = "\n".join(ln for ln in lines if ln)
        return [body] if body else []

    def set_env(self, atoms: tuple[tuple[str, str], ...], name: str, value: str) -> None:
        env = self.tables.setdefault(atoms, {}).setdefault("build", {}).setdefault("env", {})
        env[name] = value

    def requirements(self, value: Word, scope: _Scope) -> list[str]:
        reqs = self.words(value, scope)
        for r in reqs:
            try:
                Requirement(r)
            except InvalidRequirement as exc:
                raise Unconvertible(
                    f"{r!r} is not a requirement: {str(exc).splitlines()[0]}"
                ) from exc
        return reqs

    def v_python_deps(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        reqs = self.requirements(value, scope)
        self.set(atoms, "build", "requires", reqs)
        self.set(atoms, "test", "requires", reqs)

    def v_python_deps_default(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        reqs = self.requirements(value, scope)
        if reqs:  # "" only turns off build_wheel.sh's defaults; cbuild has none
            self.v_python_deps(scope, atoms, Word((("lit", " ".join(reqs)),), ""), line)

    def v_module_build_deps(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "system", "modules", self.words(value, scope))

    v_module_build_deps_default = v_module_build_deps

    def v_module_runtime_deps(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "system", "runtime_modules", self.words(value, scope))

    def v_pre_download_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        if self.commands(value, scope):
            raise Unconvertible(
                "runs on the build node before the download; cbuild fetches sources itself "
                "([source] url or git)"
            )

    def v_patches(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        names = self.words(value, scope)
        missing = [n for n in names if not self.patches_dir or not (self.patches_dir / n).is_file()]
        if missing:
            where = self.patches_dir or "(no patches folder given)"
            raise Unconvertible(f"patch file {missing[0]} not found in {where}")
        for n in names:
            self.patch_files[n] = self.patches_dir / n  # type: ignore[operator]
        self.set(atoms, "build", "patches", names)

    def v_pre_build_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        env, rest = _split_exports(self.x(value, scope, "shell"))
        for k, v in env.items():
            self.set_env(atoms, k, v)
        if rest:
            self.set(atoms, "build", "pre_build", [rest])

    def v_bdist_wheel_args(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        args = self.words(value, scope)
        if args:
            settings = self.tables.setdefault(atoms, {}).setdefault("build", {})
            settings.setdefault("config_settings", {})["--build-option"] = args

    def v_pip_wheel_args(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        args = self.words(value, scope)
        settings: dict[str, list[str]] = {}
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-C", "--config-settings") and i + 1 < len(args):
                kv, i = args[i + 1], i + 2
            elif a.startswith("--config-settings="):
                kv, i = a.split("=", 1)[1], i + 1
            elif a.startswith("-C"):
                kv, i = a[2:], i + 1
            else:
                raise Unconvertible(f"pip option {a!r} has no recipe field (config settings do)")
            k, _, v = kv.partition("=")
            settings.setdefault(k, []).append(v)
        table = self.tables.setdefault(atoms, {}).setdefault("build", {})
        cs = table.setdefault("config_settings", {})
        cs.update({k: v[0] if len(v) == 1 else v for k, v in settings.items()})

    def v_post_build_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        text = self.x(value, scope, "shell").strip()
        if not text:
            return
        if "manipulate_wheels.py" in text:
            self.wheel_edits(text, atoms)
            return
        text = re.sub(r"\$\{?WHEEL_NAME\}?", "$WHEEL", text)
        self.set(atoms, "build", "post_build", self.commands(Word((("lit", text),), text), scope))

    def v_patch_wheel_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        text = self.x(value, scope, "shell").strip()
        if not text:
            return
        if "manipulate_wheels.py" not in text:
            raise Unconvertible(
                "shell on the wheel archive (unzip/zip); express it as [wheel] edits or as a "
                "patch of the source"
            )
        self.wheel_edits(text, atoms)

    def wheel_edits(self, text: str, atoms: Any) -> None:
        """manipulate_wheels.py calls -> [wheel] edits; anything else in the text stops it."""
        calls = [c.strip() for c in re.split(r"&&|;|\n", text) if c.strip()]
        edits: dict[str, list[str]] = {}
        for call in calls:
            try:
                args = shlex.split(call)
            except ValueError as exc:
                raise Unconvertible(f"cannot read {call!r}: {exc}") from exc
            if not args or not args[0].endswith("manipulate_wheels.py"):
                raise Unconvertible(f"shell besides manipulate_wheels.py: {call!r}")
            key = None
            for a in args[1:]:
                if a in ("-a", "--add_req"):
                    key = "add_requires"
                elif a in ("-u", "--update_req"):
                    key = "update_requires"
                elif a in ("-r", "--remove_req"):
                    key = "remove_requires"
                elif a in ("-w", "--wheels", "--inplace", "--force", "-v", "--verbose"):
                    key = "wheels" if a in ("-w", "--wheels") else None
                elif a.startswith("-"):
                    raise Unconvertible(f"manipulate_wheels.py option {a} has no recipe field")
                elif key and key != "wheels":
                    edits.setdefault(key, []).append(a)
        for key, values in edits.items():
            self.set(atoms, "wheel", key, values)

    def v_update_requirements(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        updates = self.words(value, scope)
        for u in updates:
            new = u.split("->", 1)[-1]
            try:
                Requirement(new)
            except InvalidRequirement as exc:
                raise Unconvertible(f"{u!r} is not a requirement update") from exc
        self.set(atoms, "wheel", "update_requires", updates)

    def v_rpath_to_add(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        paths = [p for p in re.split(r"[:\s]+", self.x(value, scope, "plain")) if p]
        self.set(atoms, "wheel", "rpath", paths)

    def v_rpath_add_origin(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        v = self.x(value, scope, "plain").strip()
        self.set(atoms, "wheel", "rpath_origin", v not in ("", "0", "false", "no"))

    def v_python_import_name(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        names = self.words(value, scope)
        test = scope.lookup("TEST_COMMAND")
        if test and self.exp.expand(test.value, scope, "shell").strip():
            return  # TEST_COMMAND replaces the import test: import_names = [] (set there)
        self.set(atoms, "package", "import_names", names)

    def v_python_tests(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        code = self.x(value, scope, "shell").strip()
        if (test := scope.lookup("TEST_COMMAND")) and self.x(test.value, scope, "shell").strip():
            raise Unconvertible("never ran: TEST_COMMAND replaces the import test and its code")
        if code:
            self.set(atoms, "test", "python", [code])

    def v_test_command(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        cmds = self.commands(value, scope)
        if cmds:
            self.set(atoms, "test", "commands", cmds)
            self.set(atoms, "package", "import_names", [])  # it replaces the import test

    def v_pre_test_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "test", "pre_commands", self.commands(value, scope))

    def v_package_suffix(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "wheel", "suffix", self.x(value, scope, "plain"))

    def v_python_versions(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        found = [
            m for w in self.words(value, scope) if (m := re.fullmatch(r"(?:python/)?3\.(\d+)", w))
        ]
        if not found or len(found) != len(self.words(value, scope)):
            raise Unconvertible("PYTHON_VERSIONS is not a list of python/3.X modules")
        minors = sorted({int(m[1]) for m in found})
        gaps = [f"!=3.{n}.*" for n in range(minors[0], minors[-1]) if n not in minors]
        spec = ",".join([f">=3.{minors[0]}", f"<3.{minors[-1] + 1}", *gaps])
        self.set(atoms, "package", "pythons", spec)

    # Source: the download variables read together, in their idioms.
    def source(self, scope: _Scope, own: dict[str, Binding]) -> None:
        atoms = scope.atoms

        def get(name: str, mode: str = "template") -> tuple[str, int] | None:
            found = scope.lookup(name)
            return (self.x(found.value, scope, mode), found.line) if found else None

        lines = {n: own[n].line for n in own}
        try:
            method = (get("PACKAGE_DOWNLOAD_METHOD", "plain") or ("", 0))[0]
            arg = get("PACKAGE_DOWNLOAD_ARGUMENT")
            cmd = get("PACKAGE_DOWNLOAD_CMD", "shell")
            post = get("POST_DOWNLOAD_COMMANDS", "shell")
            folder = get("PACKAGE_FOLDER_NAME")
            name = get("PACKAGE_DOWNLOAD_NAME")
        except Unconvertible as exc:
            line = min(lines.values())
            self.skip(line, "PACKAGE_DOWNLOAD_*", str(exc))
            return
        handled: set[str] = set()
        arg_v = arg[0] if arg else ""
        try:
            clone = shlex.split(cmd[0].replace("$PACKAGE_DOWNLOAD_ARGUMENT", arg_v)) if cmd else []
        except ValueError:
            clone = []  # not a command line this reads: reported as an unknown download below
        if method.lower() == "git" and "git" in clone[:1] and "clone" in clone[1:2]:
            branch = clone[clone.index("--branch") + 1] if "--branch" in clone else None
            url = next(
                (a for a in clone[2:] if re.match(r"(https?|git|ssh)://|\S+@\S+:", a)), arg_v
            )
            if branch is None:
                self.skip(
                    lines.get("PACKAGE_DOWNLOAD_CMD", 0),
                    "PACKAGE_DOWNLOAD_CMD=...",
                    "a git clone without --branch: no tag or commit to pin",
                )
            else:
                rev = re.sub(r"\$\{VERSION(:\?[^}]*)?\}|\$VERSION", "{version}", branch)
                self.set(atoms, "source", "git", url)
                self.set(atoms, "source", "rev", rev)
                if "--recursive" in clone or "--recurse-submodules" in clone:
                    self.set(atoms, "source", "submodules", True)
                handled |= {
                    "PACKAGE_DOWNLOAD_METHOD",
                    "PACKAGE_DOWNLOAD_ARGUMENT",
                    "PACKAGE_DOWNLOAD_CMD",
                    "PACKAGE_DOWNLOAD_NAME",
                    "PACKAGE_FOLDER_NAME",
                }
                # The idiom's tar of the clone is what cbuild's git fetch does itself.
                if post and re.fullmatch(r"tar -?[zcvf]+ \S+( \S+)?", post[0].strip()):
                    handled.add("POST_DOWNLOAD_COMMANDS")
        elif arg and re.match(r"(https?|ftp)://", arg_v):
            raw_arg = scope.lookup("PACKAGE_DOWNLOAD_ARGUMENT")
            self.skip(
                lines.get("PACKAGE_DOWNLOAD_ARGUMENT", arg[1]),
                f"PACKAGE_DOWNLOAD_ARGUMENT={raw_arg.value.raw if raw_arg else arg_v}",
                "a URL source needs its sha256, which the config does not record: add "
                "[source] url and sha256",
            )
            handled |= {
                "PACKAGE_DOWNLOAD_ARGUMENT",
                "PACKAGE_DOWNLOAD_METHOD",
                "PACKAGE_DOWNLOAD_CMD",
            }
        elif arg:
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(==\{version\})?", arg_v)
            if not m:
                self.skip(
                    arg[1],
                    f"PACKAGE_DOWNLOAD_ARGUMENT={arg_v}",
                    "not a project name (or name==$VERSION)",
                )
            elif canonicalize_name(m[1]) != canonicalize_name(self.package):
                self.set(atoms, "source", "pypi_name", m[1])
            handled.add("PACKAGE_DOWNLOAD_ARGUMENT")
        if name and "PACKAGE_DOWNLOAD_NAME" not in handled and "PACKAGE_DOWNLOAD_NAME" in own:
            if canonicalize_name(name[0]) != canonicalize_name(self.package):
                if "{version}" in name[0] or "." in name[0]:
                    self.set(atoms, "source", "filename", name[0])
                else:
                    self.set(atoms, "source", "pypi_name", name[0])
            handled.add("PACKAGE_DOWNLOAD_NAME")
        if folder and "PACKAGE_FOLDER_NAME" not in handled and "PACKAGE_FOLDER_NAME" in own:
            if folder[0] != self.package:
                self.set(atoms, "source", "folder", folder[0])
            handled.add("PACKAGE_FOLDER_NAME")
        if (
            method
            and "PACKAGE_DOWNLOAD_METHOD" not in handled
            and method.lower() in ("pip", "pip download")
        ):
            handled.add("PACKAGE_DOWNLOAD_METHOD")
        for var in sorted(
            own.keys()
            & {
                "PACKAGE_DOWNLOAD_ARGUMENT",
                "PACKAGE_DOWNLOAD_NAME",
                "PACKAGE_DOWNLOAD_METHOD",
                "PACKAGE_DOWNLOAD_CMD",
                "POST_DOWNLOAD_COMMANDS",
                "PACKAGE_FOLDER_NAME",
            }
            - handled
        ):
            value, line = own[var].value, own[var].line
            reason = {
                "POST_DOWNLOAD_COMMANDS": "shell on the downloaded archive; express it as a patch "
                "or [build] pre_build",
                "PACKAGE_DOWNLOAD_CMD": "a download command cbuild does not run (it fetches from "
                "PyPI, a URL with sha256, or git)",
            }.get(var, "a download setting with no recipe form here")
            self.skip(line, f"{var}={value.raw}", reason)


def _split_exports(text: str) -> tuple[dict[str, str], str]:
    """`export NAME=value` statements with constant values -> env; the rest stays shell, in
    order. Only a leading run of exports is taken out, so that no command loses an export it
    depends on."""
    env: dict[str, str] = {}
    lines = [ln.strip() for ln in text.strip().splitlines()]
    statements_ = [s.strip() for ln in lines for s in _split_semicolons(ln) if s.strip()]
    rest = list(statements_)
    while rest:
        m = re.fullmatch(r"export ([A-Za-z_][A-Za-z0-9_]*)=(.*)", rest[0])
        if not m:
            break
        try:
            words = shlex.split(m[2])
        except ValueError:
            break
        if len(words) != 1 or re.search(r"[$`]", m[2].replace("\\$", "")):
            break  # an expansion: the shell must do it at build time
        env[m[1]] = words[0]
        rest.pop(0)
    return env, "\n".join(rest)


def _split_semicolons(line: str) -> list[str]:
    """Split one shell line at `;` outside quotes (keeping `&&` chains whole)."""
    out, cur, quote = [], [], None
    for c in line:
        if quote:
            cur.append(c)
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


# --- the run ------------------------------------------------------------------------------------


def package_of(config: Path) -> tuple[str, str | None]:
    """`Cartopy.sh` -> ("Cartopy", None); `Cartopy-0.20.2.sh` -> ("Cartopy", "0.20.2"): the
    legacy script sources `<pkg>-<version>.sh` in place of `<pkg>.sh` for that version."""
    stem = config.name.removesuffix(".sh")
    m = re.fullmatch(r"(.+?)-(\d[A-Za-z0-9.+!]*)", stem)
    if m:
        try:
            Version(m[2])
            return m[1], m[2]
        except InvalidVersion:
            pass
    return stem, None


def convert(config: Path, patches_dir: Path | None = None) -> tuple[dict[str, Any], _Converter]:
    """The recipe data of one legacy config, and the converter (its skipped list, patches)."""
    package, version = package_of(config)
    text = config.read_text()
    conv = _Converter(config, package, patches_dir)
    conv.run(text)
    data: dict[str, Any] = {"package": {"name": canonicalize_name(package)}}
    order = {name: i for i, name in enumerate(SECTIONS)}
    for atoms, sections in conv.tables.items():
        sections = dict(sorted(sections.items(), key=lambda kv: order[kv[0]]))
        if any(kind == "dead" for kind, _ in atoms):
            continue
        path = _nest(((("versions", f"=={version}"),) if version else ()) + atoms)
        node = data
        for kind, sel in path:
            node = node.setdefault(kind, {}).setdefault(sel, {})
        for section, values in sections.items():
            node.setdefault(section, {}).update(values)
    return data, conv


def import_configs(
    configs: list[Path], out_dir: Path, *, patches_dir: Path | None = None, force: bool = False
) -> list[LegacyResult]:
    """Convert each config into `out_dir/<name>.toml` (configs of one package, generic and
    version-specific, into one recipe), copy the patches they name to `out_dir/patches/`, and
    check every written recipe."""
    for c in configs:
        if not c.is_file():
            raise ConfigError(f"{c}: no such file", fix="pass legacy config/<pkg>.sh files")
    by_name: dict[str, list[Path]] = {}
    for c in configs:
        by_name.setdefault(canonicalize_name(package_of(c)[0]), []).append(c)
    results: list[LegacyResult] = []
    for name, files in by_name.items():
        path = recipe_path(name, out_dir)
        if path.exists() and not force:
            raise ConfigError(f"{path} exists", fix="pass --force to replace it, or --out DIR")
        merged: dict[str, Any] = {"package": {"name": name}}
        file_results = []
        # The generic config first: version-specific ones become [versions."==X"] tables.
        for config in sorted(files, key=lambda f: package_of(f)[1] is not None):
            pdir = patches_dir or config.resolve().parent.parent / PATCHES_DIR
            data, conv = convert(config, pdir)
            _merge(merged, data)
            res = LegacyResult(config, name, skipped=conv.skipped, data=data)
            if package_of(config)[1] and any(package_of(f)[1] is None for f in files):
                res.skipped.append(
                    Skipped(
                        0,
                        config.name,
                        "build_wheel.sh sourced this file instead of the generic config for its "
                        "version; as a [versions] table it overrides key by key, so keys only the "
                        "generic config sets still apply",
                    )
                )
            for n, src in conv.patch_files.items():
                (out_dir / PATCHES_DIR).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out_dir / PATCHES_DIR / n)
            file_results.append(res)
        out_dir.mkdir(parents=True, exist_ok=True)
        header = [
            f"converted by `cbuild recipe import-legacy` from {', '.join(f.name for f in files)}"
        ]
        path.write_text(to_toml(merged, comments={"package": header}))
        errors = [e.message for e in check_recipe(path)]
        for r in file_results:
            r.recipe, r.errors = path, errors
        results += file_results
    return results


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
