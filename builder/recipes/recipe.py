"""Recipes: what a package needs beyond its sdist, one strictly checked `recipes/<name>.toml` each.

    [package]
    name = "biopython"
    import_names = ["Bio"]          # [] = no import test; no recipe = derived from the wheel
    pythons = ">=3.10"              # the Pythons it builds for (PEP 440 specifier)

    [source]                        # default: the PyPI sdist of `name` (or `pypi_name`)
    url = "https://example.org/x-{version}.tar.gz"   # or git = "..." with rev = "v{version}"
    sha256 = "..."                                   # or binary_wheel = true (repackage PyPI's)

    [build]
    requires = ["numpy>=2"]         # extra build wheels (PEP 508)
    env = { CFLAGS_EXTRA = "-g0" }
    patches = ["x-fix.patch"]       # recipes/patches/, applied in order with patch -p1
    pre_build = ["sed -i s/a/b/ setup.py"]   # shell in the source folder, same shell as the build
    config_settings = { "--build-option" = ["--cpp_ext"] }

    [system]
    apt = ["libfftw3-dev"]          # standalone image
    modules = ["fftw"]              # cvmfs stack: loaded for the build (runtime_modules: + test)

    [test]
    requires = ["numpy"]            # extra runtime test wheels (PEP 508)
    python = ["assert Bio.__version__"]       # run after importing import_names
    commands = ["python -c 'import Bio'"]

    [wheel]                         # edits of the built wheel, after repair
    remove_requires = ["nvidia-*"]
    update_requires = ["torch->torch-cpu", "numpy<2"]
    suffix = "-gpu"
    local_tags = ["torch27"]

    [versions."<1.80".test]         # overrides for the matching versions, key by key;
    requires = ["numpy<2"]          # later matching tables win
    [accelerators."cuda*".wheel]    # ... for matching accelerators (cpu, cuda12, ...)
    [targets."gentoo2023-*".build]  # ... for matching target ids (fnmatch; "!glob" negates)

Override tables nest (`[versions."<2".targets."*-x86-64-v4".build]`); at each level the
version tables apply first, then accelerator tables, then target tables, each in file order.

An unknown key is an error that names the file, line and closest valid key: the shell
configs this replaces silently ignored typos. Every key of `SECTIONS` carries its JSON schema, so
`schema()` (and `schema/recipe.schema.json`) is generated from the same table that checks.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
import string
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import ConfigError

PATCHES_DIR = "patches"  # beside the recipes, e.g. recipes/patches/
# The recipes that come with cbuild (the checkout's `recipes/`).
BUILTIN_RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SCHEMA_ID = "https://cbuild.invalid/schema/recipe.schema.json"


class TargetLike(Protocol):
    """What override matching needs of a target (builder.targets.Target has it)."""

    @property
    def id(self) -> str: ...

    accelerator: str
    python: str


@dataclass(frozen=True)
class Source:
    """Where the source comes from; `kind` is derived from the keys given."""

    kind: str = "pypi"  # pypi | url | git | wheel (PyPI's binary wheel, repackaged)
    pypi_name: str | None = None  # the project name on PyPI when it is not the recipe's name
    url: str | None = None
    sha256: str | None = None
    git: str | None = None
    rev: str | None = None  # tag or commit; pinned to a commit and archived at fetch time
    submodules: bool = False
    filename: str | None = None  # download name override
    folder: str | None = None  # top folder inside the archive, when not `<name>-<version>`


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
    pythons: str | None = None  # specifier of the Pythons to build for; None: all
    source: Source = Source()
    patches: tuple[str, ...] = ()  # names under patches_dir, applied in order
    patches_dir: Path | None = None
    pre_build: tuple[str, ...] = ()
    post_build: tuple[str, ...] = ()
    config_settings: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, -C key=value each
    build_once: bool = False  # pure/abi3: one build serves every target
    apt: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    runtime_modules: tuple[str, ...] = ()
    test_python: tuple[str, ...] = ()
    test_pre_commands: tuple[str, ...] = ()
    add_requires: tuple[str, ...] = ()
    remove_requires: tuple[str, ...] = ()
    update_requires: tuple[str, ...] = ()
    suffix: str = ""
    local_tags: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    rpath_origin: bool = False
    target: str | None = None  # the target id this was resolved for; None: no target overrides
    _doc: _Document | None = field(default=None, repr=False, compare=False, hash=False)

    def for_target(self, target: TargetLike) -> Recipe:
        """This recipe with the accelerator and target overrides of `target` applied."""
        if self._doc is None:
            return replace(self, target=target.id)
        return self._doc.resolve(self.version, target)

    @property
    def patch_files(self) -> tuple[Path, ...]:
        return tuple((self.patches_dir or Path(PATCHES_DIR)) / p for p in self.patches)

    @property
    def pip_args(self) -> tuple[str, ...]:
        """`pip wheel` options for the config settings (a list value repeats the key)."""
        return tuple(f"--config-settings={k}={v}" for k, v in self.config_settings)

    @property
    def wheel_edits(self) -> bool:
        return bool(
            self.add_requires or self.remove_requires or self.update_requires or self.suffix
        )

    def not_built_yet(self, local_source: bool = False) -> list[str]:
        """Fields this recipe uses that the build does not act on yet, each with why: a recipe
        that needs them must fail before building, not build something else silently.
        `local_source`: the source was given (--sdist), so [source] does not matter."""
        gaps = []
        if not local_source and self.source.kind != "pypi":
            gaps.append(f"[source] {self.source.kind}: only PyPI sdists are fetched so far")
        if not local_source and self.source.pypi_name:
            gaps.append("[source] pypi_name: the sdist is looked up by the recipe's name")
        if self.rpath or self.rpath_origin:
            gaps.append("[wheel] rpath: RPATH edits need patchelf, which repair does not run yet")
        return gaps

    def builds_for_python(self, python: str) -> bool:
        return self.pythons is None or SpecifierSet(self.pythons).contains(python, True)

    def as_dict(self) -> dict[str, Any]:
        """The resolved recipe in the file's own shape (sections and keys), for `recipe show`."""
        out: dict[str, Any] = {"package": {"name": self.name}}
        for section, keys in SECTIONS.items():
            for key, spec in keys.items():
                if (section, key) == ("package", "name"):
                    continue
                value = spec.get(self)
                if value is not None:
                    out.setdefault(section, {})[key] = value
        out["resolved_for"] = {"version": self.version, "target": self.target}
        return out


# --- keys: checker, JSON schema and the Recipe field each fills ---------------------------------
# A checker takes (value, where) and returns the normalised value or raises ConfigError.
Checker = Callable[[Any, "_Where"], Any]


@dataclass(frozen=True)
class Key:
    check: Checker
    attr: str  # Recipe attribute, or "source.<attr>"
    schema: dict[str, Any]
    doc: str
    merge: str = "replace"  # replace | update (tables: an override sets or changes entries)
    overridable: bool = True

    def get(self, recipe: Recipe) -> Any:
        """The resolved value as the file would write it; None when it is the default."""
        if self.attr == "source.kind":  # binary_wheel
            return True if recipe.source.kind == "wheel" else None
        obj: Any = recipe
        attr = self.attr
        if attr.startswith("source."):
            obj, attr = recipe.source, attr.removeprefix("source.")
        value = getattr(obj, attr)
        if value == _DEFAULTS[self.attr] and self.attr != "import_names":
            return None
        if attr == "config_settings":
            table: dict[str, list[str]] = {}
            for k, v in value:
                table.setdefault(k, []).append(v)
            return {k: v[0] if len(v) == 1 else v for k, v in table.items()}
        return list(value) if isinstance(value, tuple) else value


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

    @property
    def line(self) -> int | None:
        return _find_line(self.text, self.table, self.key)

    def error(self, message: str, fix: str | None = None) -> ConfigError:
        line = self.line
        exc = ConfigError(f"{_show(self.path)}{f':{line}' if line else ''}: {message}", fix)
        exc.path, exc.line = self.path, line  # type: ignore[attr-defined]
        return exc


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"{where.key!r} in {where.section} must be a string, not {_type(value)}")
    return value


def _nonempty_str(value: Any, where: _Where) -> str:
    if not _str(value, where).strip():
        raise where.error(f"{where.key!r} in {where.section} must not be empty")
    return value


def _bool(value: Any, where: _Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(
            f"{where.key!r} in {where.section} must be true or false, not {_type(value)}"
        )
    return value


def _str_list(value: Any, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(
            f"{where.key!r} in {where.section} must be a list of strings, not {_type(value)}"
        )
    return tuple(value)


def _commands(value: Any, where: _Where) -> tuple[str, ...]:
    cmds = _str_list(value, where)
    for i, c in enumerate(cmds, 1):
        if not c.strip():
            raise where.error(f"command {i} of {where.section} {where.key} is empty")
    return cmds


def _import_names(value: Any, where: _Where) -> tuple[str, ...]:
    names = _str_list(value, where)
    for n in names:
        if not n.strip():
            raise where.error(
                f"empty import name in {where.section} {where.key}",
                fix="name a module, e.g. 'Bio', or write import_names = [] for no import test",
            )
        if not all(part.isidentifier() for part in n.split(".")):
            raise where.error(
                f"{n!r} in {where.section} {where.key} is not a Python module name",
                fix="use dotted identifiers such as 'Bio' or 'Bio.Align'",
            )
    return names


def _requirement(r: str, where: _Where) -> Requirement:
    try:
        return Requirement(r)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise where.error(
            f"invalid requirement {r!r} in {where.section} {where.key}: {reason}",
            fix="write PEP 508 requirements, e.g. 'numpy>=1.26' or 'scipy'",
        ) from exc


def _requirements(value: Any, where: _Where) -> tuple[str, ...]:
    reqs = _str_list(value, where)
    for r in reqs:
        _requirement(r, where)
    return reqs


_NAME_GLOB = re.compile(r"[A-Za-z0-9*?\[\]][A-Za-z0-9._*?\[\]!-]*\Z")


def _requirement_names(value: Any, where: _Where) -> tuple[str, ...]:
    names = _str_list(value, where)
    for n in names:
        if not _NAME_GLOB.match(n):
            raise where.error(
                f"{n!r} in {where.section} {where.key} is not a project name or name pattern",
                fix="name the requirement to remove, e.g. 'torch' or 'nvidia-*-cu12'",
            )
    return names


RENAME = "->"


def _requirement_updates(value: Any, where: _Where) -> tuple[str, ...]:
    """`numpy<2` (replace numpy's requirement, markers kept) or `a->b` (rename a to b)."""
    updates = _str_list(value, where)
    for u in updates:
        old, sep, new = u.partition(RENAME)
        if sep:
            if not _NAME_GLOB.match(old.strip()) or any(c in old for c in "*?["):
                raise where.error(
                    f"{old.strip()!r} in {where.section} {where.key} ({u!r}) is not a project name",
                    fix="write a rename as 'old-name->new-requirement', e.g. 'torch->torch-cpu'",
                )
            _requirement(new.strip(), where)
        else:
            _requirement(u, where)
    return updates


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


def _config_settings(value: Any, where: _Where) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise where.error(
            f"{where.key!r} in {where.section} must be a table, not {_type(value)}",
            fix='e.g. config_settings = { "setup-args" = ["-Dblas=flexiblas"] }',
        )
    out: list[tuple[str, str]] = []
    for k, v in value.items():
        if not k or "=" in k:
            raise where.error(f"{k!r} in {where.section} config_settings is not a setting name")
        values = v if isinstance(v, list) else [v]
        if not all(isinstance(x, str) for x in values):
            raise where.error(
                f"config_settings.{_quote(k)} in {where.section} must be a string or a list of "
                f"strings, not {_type(v)}"
            )
        out += [(k, x) for x in values]
    return tuple(out)


def _specifier(value: Any, where: _Where) -> str:
    spec = _nonempty_str(value, where)
    try:
        SpecifierSet(spec)
    except InvalidSpecifier as exc:
        raise where.error(
            f"invalid version specifier {spec!r} in {where.section} {where.key}",
            fix="use a PEP 440 specifier, e.g. '>=3.10' or '>=3.10,<3.13'",
        ) from exc
    return spec


def _template(value: Any, where: _Where) -> str:
    """A string in which `{version}` is the only placeholder."""
    text = _nonempty_str(value, where)
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise where.error(
            f"{where.key} in {where.section} is not a valid template ({exc})",
            fix="write {version} for the version, {{ and }} for literal braces",
        ) from exc
    if names - {"version"}:
        raise where.error(
            f"unknown placeholder {{{sorted(names - {'version'})[0]}}} in {where.section} "
            f"{where.key}",
            fix="{version} is the only placeholder",
        )
    return text


def _url(value: Any, where: _Where) -> str:
    url = _template(value, where)
    if not re.match(r"(https?|file)://", url):
        raise where.error(
            f"{where.key} in {where.section} must be an http(s):// or file:// URL, not {url!r}"
        )
    return url


def _sha256(value: Any, where: _Where) -> str:
    sha = _str(value, where).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise where.error(
            f"sha256 in {where.section} must be 64 hex digits, not {value!r}",
            fix="sha256sum FILE gives it",
        )
    return sha


def _git(value: Any, where: _Where) -> str:
    url = _nonempty_str(value, where)
    if not re.match(r"(https?|ssh|git|file)://|[\w.-]+@[\w.-]+:", url):
        raise where.error(f"git in {where.section} is not a repository URL: {url!r}")
    return url


def _project_name(value: Any, where: _Where) -> str:
    name = _nonempty_str(value, where)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise where.error(f"{name!r} in {where.section} {where.key} is not a project name")
    return name


def _patches(value: Any, where: _Where) -> tuple[str, ...]:
    names = _str_list(value, where)
    folder = where.path.parent / PATCHES_DIR
    for n in names:
        if not n.strip() or n.startswith("/") or ".." in Path(n).parts:
            raise where.error(
                f"patch {n!r} in {where.section} patches must be a file name under {_show(folder)}/"
            )
        if not (folder / n).is_file():
            raise where.error(
                f"patch {n!r} in {where.section} patches not found: {_show(folder / n)}",
                fix=f"add the file to {_show(folder)}/ or correct the name",
            )
    return names


_APT = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?\Z")


def _apt(value: Any, where: _Where) -> tuple[str, ...]:
    pkgs = _str_list(value, where)
    for p in pkgs:
        if not _APT.match(p):
            raise where.error(f"{p!r} in {where.section} apt is not a Debian package name")
    return pkgs


def _modules(value: Any, where: _Where) -> tuple[str, ...]:
    mods = _str_list(value, where)
    for m in mods:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*", m):
            raise where.error(f"{m!r} in {where.section} {where.key} is not a module name")
    return mods


def _suffix(value: Any, where: _Where) -> str:
    s = _str(value, where)
    if not re.fullmatch(r"[-_.]?[A-Za-z0-9]+([-_.][A-Za-z0-9]+)*", s):
        raise where.error(
            f"suffix {s!r} in {where.section} cannot end a project name",
            fix='e.g. suffix = "-gpu"',
        )
    return s


def _local_tags(value: Any, where: _Where) -> tuple[str, ...]:
    tags = _str_list(value, where)
    for t in tags:
        if not re.fullmatch(r"[A-Za-z0-9]+", t):
            raise where.error(
                f"local tag {t!r} in {where.section} must be letters and digits",
                fix='e.g. local_tags = ["torch27"] gives 1.0+torch27.computecanada',
            )
    return tags


def _k(check: Checker, attr: str, doc: str, kind: str, **kw: Any) -> Key:
    """A key whose JSON schema is a string, a list of strings, a boolean, or `schema=`."""
    schema = (
        kw.pop("schema", None)
        or {
            "str": {"type": "string"},
            "list": {"type": "array", "items": {"type": "string"}},
            "bool": {"type": "boolean"},
        }[kind]
    )
    return Key(check, attr, {**schema, "description": doc}, doc, **kw)


_STR_TABLE = {"type": "object", "additionalProperties": {"type": "string"}}

SECTIONS: dict[str, dict[str, Key]] = {
    "package": {
        "name": _k(
            _str, "name", "Project name; must match the file name.", "str", overridable=False
        ),
        "import_names": _k(
            _import_names,
            "import_names",
            "Modules the import test imports; [] for none (default: derived "
            "from the wheel). Legacy PYTHON_IMPORT_NAME.",
            "list",
        ),
        "pythons": _k(
            _specifier,
            "pythons",
            "PEP 440 specifier of the Pythons to build for. Legacy PYTHON_VERSIONS.",
            "str",
        ),
    },
    "source": {
        "pypi_name": _k(
            _project_name,
            "source.pypi_name",
            "Project name on PyPI when it differs. Legacy PACKAGE_DOWNLOAD_ARGUMENT.",
            "str",
        ),
        "url": _k(
            _url, "source.url", "Source archive URL ({version} is replaced); needs sha256.", "str"
        ),
        "sha256": _k(_sha256, "source.sha256", "sha256 of the archive at url.", "str"),
        "git": _k(
            _git,
            "source.git",
            "Git repository; rev picks the tag or commit. Pinned to a commit and "
            "archived at fetch time. Legacy PACKAGE_DOWNLOAD_METHOD=Git.",
            "str",
        ),
        "rev": _k(_template, "source.rev", "Tag or commit of git ({version} is replaced).", "str"),
        "submodules": _k(_bool, "source.submodules", "Fetch git submodules too.", "bool"),
        "binary_wheel": _k(
            _bool, "source.kind", "Repackage PyPI's binary wheel instead of building.", "bool"
        ),
        "filename": _k(
            _template,
            "source.filename",
            "Download file name ({version} is replaced). Legacy PACKAGE_DOWNLOAD_NAME.",
            "str",
        ),
        "folder": _k(
            _template,
            "source.folder",
            "Top folder inside the archive ({version} is replaced). Legacy PACKAGE_FOLDER_NAME.",
            "str",
        ),
    },
    "build": {
        "requires": _k(
            _requirements,
            "build_requires",
            "Extra build requirements (PEP 508), fetched as wheels. Legacy PYTHON_DEPS.",
            "list",
        ),
        "env": _k(
            _env,
            "env",
            "Environment variables of the build.",
            "table",
            merge="update",
            schema=_STR_TABLE,
        ),
        "patches": _k(
            _patches,
            "patches",
            "Patch files under recipes/patches/, applied in order with patch -p1 "
            "after unpacking. Legacy PATCHES.",
            "list",
        ),
        "pre_build": _k(
            _commands,
            "pre_build",
            "Shell commands run in the source folder before the build, in the "
            "build's shell ($VERSION is set). Legacy PRE_BUILD_COMMANDS.",
            "list",
        ),
        "post_build": _k(
            _commands,
            "post_build",
            "Shell commands run after the build, before repair; $WHEEL is the "
            "built wheel. Legacy POST_BUILD_COMMANDS.",
            "list",
        ),
        "config_settings": _k(
            _config_settings,
            "config_settings",
            "PEP 517 config settings (pip -C key=value; a list repeats the "
            "key). Legacy PIP_WHEEL_ARGS, BDIST_WHEEL_ARGS.",
            "table",
            merge="update",
            schema={
                "type": "object",
                "additionalProperties": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
            },
        ),
        "once": _k(
            _bool, "build_once", "A pure or abi3 wheel: one build serves every target.", "bool"
        ),
    },
    "system": {
        "apt": _k(_apt, "apt", "Debian packages for the standalone image.", "list"),
        "modules": _k(
            _modules,
            "modules",
            "Stack modules loaded for the build (cvmfs). Legacy MODULE_BUILD_DEPS.",
            "list",
        ),
        "runtime_modules": _k(
            _modules,
            "runtime_modules",
            "Stack modules loaded for build and test (cvmfs). Legacy MODULE_RUNTIME_DEPS.",
            "list",
        ),
    },
    "test": {
        "requires": _k(
            _requirements,
            "test_requires",
            "Extra test requirements (PEP 508), fetched as wheels.",
            "list",
        ),
        "pre_commands": _k(
            _commands,
            "test_pre_commands",
            "Shell commands run in the test venv before the tests. Legacy PRE_TEST_COMMANDS.",
            "list",
        ),
        "python": _k(
            _commands,
            "test_python",
            "Python code run after importing import_names. Legacy PYTHON_TESTS.",
            "list",
        ),
        "commands": _k(
            _commands,
            "test_commands",
            "Shell test commands. Legacy TEST_COMMAND (with import_names = []).",
            "list",
        ),
    },
    "wheel": {
        "add_requires": _k(
            _requirements,
            "add_requires",
            "Requirements added to the built wheel (PEP 508).",
            "list",
        ),
        "remove_requires": _k(
            _requirement_names,
            "remove_requires",
            "Requirements removed from the built wheel, by name or pattern.",
            "list",
        ),
        "update_requires": _k(
            _requirement_updates,
            "update_requires",
            "Requirements replaced by name, markers kept ('numpy<2'), or "
            "renamed ('a->b'). Legacy UPDATE_REQUIREMENTS.",
            "list",
        ),
        "suffix": _k(
            _suffix,
            "suffix",
            "Appended to the distribution name ('-gpu'). Legacy PACKAGE_SUFFIX.",
            "str",
        ),
        "local_tags": _k(
            _local_tags,
            "local_tags",
            "Local version tags before the site label (1.0+torch27.computecanada).",
            "list",
        ),
        "rpath": _k(
            _str_list,
            "rpath",
            "RPATH entries added to the wheel's libraries. Legacy RPATH_TO_ADD.",
            "list",
        ),
        "rpath_origin": _k(
            _bool, "rpath_origin", "Add $ORIGIN to the RPATH. Legacy RPATH_ADD_ORIGIN.", "bool"
        ),
    },
}
# Override table kinds, in the order they apply at each level.
OVERRIDES = ("versions", "accelerators", "targets")

_DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in fields(Recipe) if f.default is not MISSING},
    **{f"source.{f.name}": f.default for f in fields(Source)},
    "env": {},
}


# --- the parsed document ------------------------------------------------------------------------


@dataclass
class _Table:
    """One checked table of a recipe: its keys and its override children, in file order."""

    where: tuple[str, ...]  # TOML path of the table
    values: dict[tuple[str, str], Any]  # (section, key) -> checked value
    children: list[tuple[str, str, _Table]] = field(default_factory=list)  # (kind, selector, t)


@dataclass
class _Document:
    path: Path
    text: str
    name: str  # canonical
    root: _Table

    def resolve(self, version: str, target: TargetLike | None = None) -> Recipe:
        def chain(table: _Table) -> Iterator[_Table]:
            yield table
            for kind in OVERRIDES:
                for k, selector, child in table.children:
                    if k == kind and _matches(kind, selector, version, target):
                        yield from chain(child)

        return self._build(list(chain(self.root)), version, target)

    def paths(self) -> Iterator[list[_Table]]:
        """Every chain from the root to one table: what `check` resolves, version aside."""

        def walk(trail: list[_Table]) -> Iterator[list[_Table]]:
            yield trail
            for _, _, child in trail[-1].children:
                yield from walk([*trail, child])

        yield from walk([self.root])

    def _build(self, tables: list[_Table], version: str, target: TargetLike | None) -> Recipe:
        values: dict[str, Any] = {}
        source: dict[str, Any] = {}
        origin: dict[str, _Where] = {}
        for table in tables:
            for (section, key), value in table.values.items():
                spec = SECTIONS[section][key]
                origin[spec.attr] = _Where(self.path, self.text, (*table.where, section), key)
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


def _make_source(given: dict[str, Any], version: str, origin: dict[str, _Where]) -> Source:
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


def _check_resolved(recipe: Recipe, origin: dict[str, _Where], doc: _Document) -> None:
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


# --- loading ----------------------------------------------------------------------------------


class RecipeErrors(ConfigError):
    """All the mistakes found in one recipe file, each with its line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        if len(errors) == 1:
            super().__init__(errors[0].message, errors[0].fix)
        else:
            super().__init__("\n".join(str(e) for e in errors))


def recipe_path(name: str, recipes_dir: Path) -> Path:
    return recipes_dir / f"{canonicalize_name(name)}.toml"


def load_recipe(
    name: str, version: str, recipes_dir: Path, target: TargetLike | None = None
) -> Recipe:
    """The recipe for `name` resolved for `version` (and `target`); the defaults when there is
    no file."""
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


def check_recipe(path: Path) -> list[ConfigError]:
    """Every mistake in `path`, each override resolved on its own on top of the base tables;
    [] when it is good."""
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
            doc._build(trail, "0", None)
        except ConfigError as exc:
            if exc.message not in seen:
                seen.add(exc.message)
                errors.append(exc)
    return errors


def parse_recipe(path: Path) -> _Document:
    """Read and check every table of a recipe file; RecipeErrors lists all it found."""
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f":{m[1]}" if m else ""
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        col = f" (column {m[2]})" if m else ""
        raise ConfigError(f"{_show(path)}{where}: invalid TOML: {reason}{col}") from exc

    errors: list[ConfigError] = []
    root = _check_table(path, text, (), data, errors)

    pkg = _Where(path, text, ("package",), "name")
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
    return _Document(path, text, canonicalize_name(name), root)


def _check_table(
    path: Path,
    text: str,
    prefix: tuple[str, ...],
    data: dict[str, Any],
    errors: list[ConfigError],
) -> _Table:
    """Validate one table (the file, or an override table at TOML path `prefix`): its sections,
    and recursively its override tables. Mistakes go to `errors`; checking goes on."""
    table = _Table(prefix, {})
    valid_top = [*SECTIONS, *OVERRIDES]
    for section, content in data.items():
        where = _Where(path, text, prefix, section)
        if section in OVERRIDES:
            if not isinstance(content, dict):
                errors.append(
                    where.error(
                        f"{section!r} {where.place} must be a table of tables, not {_type(content)}"
                    )
                )
                continue
            for selector, sub in content.items():
                sel_where = _Where(path, text, (*prefix, section), selector)
                try:
                    _check_selector(section, selector, sel_where)
                except ConfigError as exc:
                    errors.append(exc)
                    continue
                if not isinstance(sub, dict):
                    errors.append(
                        sel_where.error(
                            f"{sel_where.section[:-1]}.{_quote(selector)}] must be a "
                            f"table, not {_type(sub)}"
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
            errors.append(where.error(f"{where.key!r} must be a table, not {_type(content)}"))
            continue
        for key, value in content.items():
            key_where = _Where(path, text, (*prefix, section), key)
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
                    _Where(path, text, (*prefix, section), given[1]).error(
                        f"[source] {' and '.join(given)} exclude each other",
                        fix="a recipe builds from one source: PyPI's sdist (default), a url, a git "
                        "repository, or PyPI's binary wheel",
                    )
                )
    return table


_GLOB = re.compile(r"!?[A-Za-z0-9*?._\[\]-]+\Z")


def _check_selector(kind: str, selector: str, where: _Where) -> None:
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
    where = _Where(path, text, table, key)
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


# --- schema, new recipes ------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    """The JSON schema of a recipe file (draft 2020-12), made from SECTIONS."""

    def sections(base: bool) -> dict[str, Any]:
        out = {}
        for section, keys in SECTIONS.items():
            props = {k: v.schema for k, v in keys.items() if base or v.overridable}
            out[section] = {"type": "object", "additionalProperties": False, "properties": props}
        if base:
            out["package"]["required"] = ["name"]
        return out

    def overrides() -> dict[str, Any]:
        ref = {"$ref": "#/$defs/override"}
        return {
            "versions": {
                "type": "object",
                "description": "Overrides for the versions a PEP 440 specifier matches.",
                "additionalProperties": ref,
            },
            "accelerators": {
                "type": "object",
                "description": "Overrides for accelerators matching a glob (cpu, cuda12, "
                "cuda*); '!' in front negates.",
                "additionalProperties": ref,
            },
            "targets": {
                "type": "object",
                "description": "Overrides for target ids matching a glob (gentoo2023-*); '!' in "
                "front negates.",
                "additionalProperties": ref,
            },
        }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cbuild recipe",
        "description": "recipes/<name>.toml: what a package needs beyond its sdist.",
        "type": "object",
        "additionalProperties": False,
        "required": ["package"],
        "properties": {
            **sections(True),
            **overrides(),
        },
        "$defs": {
            "override": {
                "type": "object",
                "additionalProperties": False,
                "properties": {**sections(False), **overrides()},
            }
        },
    }


def schema_text() -> str:
    """schema() as committed in schema/recipe.schema.json."""
    return json.dumps(schema(), indent=2) + "\n"


def new_recipe_text(name: str, import_name: str | None = None) -> str:
    """A starting recipe: the common keys, the rest as comments."""
    canonical = canonicalize_name(name)
    module = import_name or re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f'''# Recipe for {name}. `cbuild recipe check` checks it and
# `cbuild recipe show {canonical} VERSION` prints it resolved; keys: schema/recipe.schema.json.

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
        header = ".".join(_quote(p) for p in path)
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
