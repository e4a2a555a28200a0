"""One legacy config -> recipe tables: the statements walked with their conditions, each legacy
variable converted by its handler, what does not convert reported with its line."""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from builder.recipes.legacy.defaults import default_pytest
from builder.recipes.legacy.expand import (
    NEVER,
    Shadow,
    _condition,
    _Expander,
    _negate,
    _nest,
    _Scope,
)
from builder.recipes.legacy.shell import Statement, Word, _block_closer, _keywords_apart, statements
from builder.recipes.legacy.source import SOURCE_VARS, convert_source
from builder.recipes.legacy.variables import LEGACY_ENV, LEGACY_VARIABLES, Skipped, Unconvertible


class _Converter:
    def __init__(self, config: Path, package: str, patches_dir: Path | None) -> None:
        self.config = config
        self.package = package
        self.patches_dir = patches_dir
        self.exp = _Expander(package)
        self.skipped: list[Skipped] = []
        self.notes: list[Skipped] = []  # what had no effect in the legacy build either
        self.tables: dict[tuple[tuple[str, str], ...], dict[str, dict[str, Any]]] = {}
        self.patch_files: dict[str, Path] = {}
        self.scopes: list[_Scope] = []  # in file order, so tables come out in file order
        self.exported: set[tuple[int, str]] = set()  # (id of the scope, name) of `export NAME=`
        self.text = ""
        self.shadow: Shadow = {}
        self.shell_done: set[Any] = set()  # scopes whose pre_build is written

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
                if NEVER in scopes[-1].atoms:  # inside a branch bash never takes
                    scopes.append(self.scope(scopes[-1].atoms, scopes[-1]))
                    continue
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
                if NEVER in scopes[-1].atoms:
                    scopes.append(self.scope(scopes[-1].atoms, scopes[-1]))
                    continue
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
            if NEVER in scope.atoms:
                continue  # bash never runs it: nothing is lost
            if any(kind == "dead" for kind, _ in scope.atoms):
                self.skip(st.line, st.raw, "inside a condition that does not convert")
                continue
            self.statement(st, scope)
        if chains:
            self.skip(chains[-1]["line"], "if ...", "if without fi")
        live = [s for s in self.scopes if not any(k in ("dead", "never") for k, _ in s.atoms)]
        for scope in live:
            self.convert_scope(scope)
        for scope in live:
            default_pytest(self.tables, scope, self.exp)

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
            # Bash runs in order: this replaces what branches closed before it assigned.
            for s in self.scopes:
                if s is not scope and s.within(scope):
                    s.vars.pop(name, None)
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
        source_vars = set(SOURCE_VARS)
        if own.keys() & source_vars:
            self.shadow = {}
            convert_source(self, scope, own)
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
                self.unread(name, text, line, scope)
                continue
            try:
                handler(scope, atoms, value, line)
            except Unconvertible as exc:
                self.skip(line, text, str(exc))

    def unread(self, name: str, text: str, line: int, scope: _Scope) -> None:
        """A variable that is not one of build_wheel.sh's config variables."""
        b = scope.lookup(name)
        try:
            same = b is not None and self.exp.expand(b.value, scope, "plain") == self.package
        except Unconvertible:
            same = False
        if name == "PACKAGE" and same:
            pass  # the name it already has (the config's file name)
        elif name in ("PACKAGE", "VERSION"):
            self.skip(
                line,
                text,
                f"{name}= changes what build_wheel.sh builds after reading the config (wheel "
                "name, download, import test); a recipe is named by its package and version",
            )
        elif name == "RECURSIVE":
            self.skip(
                line,
                text,
                "RECURSIVE= decides whether build_wheel.sh builds the dependencies it "
                "downloads; in cbuild the run decides that",
            )
        elif scope.lookup(name) and self._used_elsewhere(name):
            pass  # a helper variable, expanded where it is used
        elif LEGACY_ENV.fullmatch(name) or name.startswith(("CUDA", "OMP_", "MKL_")):
            self.skip(
                line,
                text,
                f"{name} is not a config variable, but the build node may have exported it, "
                "so that this assignment reached the build",
            )
        else:
            close = difflib.get_close_matches(name, LEGACY_VARIABLES, n=1)
            hint = f" (a misspelt {close[0]}?)" if close else ""
            self.notes.append(
                Skipped(line, text, f"build_wheel.sh never reads {name}{hint}: it had no effect")
            )

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
        # `pip install $PYTHON_DEPS`: split at blanks, and quotes stay (no eval here).
        words = self.x(value, scope, "plain").split()
        for w in words:
            if w.startswith("-") and w not in _NO_OP_PIP_OPTIONS:
                raise Unconvertible(
                    f"pip option {w!r} in PYTHON_DEPS has no recipe field (build requirements "
                    "come from the run's wheelhouse and PyPI)"
                )
        reqs = [w for w in words if w not in _NO_OP_PIP_OPTIONS]
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

    def modules(self, value: Word, scope: _Scope) -> list[str]:
        mods = self.words(value, scope)
        for m in mods:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*", m):
                # `X=="a b"` assigns `="a b"`: `module load` got `=a`, which is no module.
                raise Unconvertible(f"{m!r} is not a module name (module load fails on it)")
        return mods

    def v_module_build_deps(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "system", "modules", self.modules(value, scope))

    v_module_build_deps_default = v_module_build_deps

    def v_module_runtime_deps(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self.set(atoms, "system", "runtime_modules", self.modules(value, scope))

    def v_pre_download_commands(self, scope: _Scope, atoms: Any, value: Word, line: int) -> None:
        self._download_exports(scope)  # raises unless it only exports
        self.build_shell(scope, atoms)

    def _download_exports(self, scope: _Scope) -> str:
        """PRE_DOWNLOAD_COMMANDS that only export: build_wheel.sh evals them in the shell that
        later builds, so they are the start of the build's shell. Anything else ran on the
        build node before the download, which cbuild does itself."""
        b = scope.lookup("PRE_DOWNLOAD_COMMANDS")
        if b is None:
            return ""
        text = self.exp.expand(b.value, scope, "shell", {"PRE_DOWNLOAD_COMMANDS": b.prev})
        for st in (s.strip() for ln in text.splitlines() for s in _split_semicolons(ln)):
            try:
                words = shlex.split(st)
            except ValueError:
                words = []
            if st and (
                words[:1] != ["export"]
                or not all(re.match(r"[A-Za-z_]\w*=", w) for w in words[1:])
                or re.search(r"\$\(|`", st)
            ):
                raise Unconvertible(
                    "runs on the build node before the download (only exports carry over to "
                    "the build); cbuild fetches sources itself"
                )
        return text

    def build_shell(self, scope: _Scope, atoms: Any) -> None:
        """[build] env and pre_build of one scope, from the download exports and
        PRE_BUILD_COMMANDS it sees (a table replaces pre_build whole, so it holds both)."""
        if atoms in self.shell_done:
            return
        self.shell_done.add(atoms)
        try:
            download = self._download_exports(scope)
        except Unconvertible:
            download = ""  # reported on its own line
        pre = scope.lookup("PRE_BUILD_COMMANDS")
        build = (
            self.exp.expand(pre.value, scope, "shell", {"PRE_BUILD_COMMANDS": pre.prev})
            if pre
            else ""
        )
        env, rest = _split_exports(f"{download}\n{build}")
        for k, v in env.items():
            self.set_env(atoms, k, v)
        if rest or pre is not None:
            self.set(atoms, "build", "pre_build", [rest] if rest else [])

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
        self.build_shell(scope, atoms)

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
        # The idiom finds the edited wheel again; cbuild follows its wheel itself.
        calls = [c for c in calls if c != "WHEEL_NAME=$(ls *.whl)"]
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
        # setrpaths.sh gets `--add_path ${RPATH_TO_ADD}` through eval: quotes go, then `:` splits.
        paths = [p for w in self.words(value, scope) for p in w.split(":") if p]
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
        code = self.x(value, scope, "plain").strip()  # Python, which no shell expands later
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


# `pip install` options in PYTHON_DEPS that change nothing in cbuild, whose build requirements
# go into a fresh environment: there is nothing installed to upgrade or ignore.
_NO_OP_PIP_OPTIONS = {"-U", "--upgrade", "-I", "--ignore-installed"}


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
    # Without exports taken out, the text stays as written (its `;` and lines untouched).
    return env, "\n".join(rest) if env else text.strip()


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
