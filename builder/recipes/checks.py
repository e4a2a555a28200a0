"""The value checkers of the recipe keys: each takes (value, where), returns the value normalised
(lists become tuples) or raises a ConfigError that names the file, line and a fix."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from string import Formatter
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from builder.recipes.where import Where, quote, show, type_name

PATCHES_DIR = "patches"  # beside the recipes, e.g. recipes/patches/
RENAME = "->"  # [wheel] update_requires: "old->new" renames a requirement

Checker = Callable[[Any, Where], Any]


def string(value: Any, where: Where) -> str:
    if not isinstance(value, str):
        raise where.error(
            f"{where.key!r} in {where.section} must be a string, not {type_name(value)}"
        )
    return value


def nonempty(value: Any, where: Where) -> str:
    if not string(value, where).strip():
        raise where.error(f"{where.key!r} in {where.section} must not be empty")
    return value


def boolean(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(
            f"{where.key!r} in {where.section} must be true or false, not {type_name(value)}"
        )
    return value


def str_list(value: Any, where: Where) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(
            f"{where.key!r} in {where.section} must be a list of strings, not {type_name(value)}"
        )
    return tuple(value)


def commands(value: Any, where: Where) -> tuple[str, ...]:
    cmds = str_list(value, where)
    for i, c in enumerate(cmds, 1):
        if not c.strip():
            raise where.error(f"command {i} of {where.section} {where.key} is empty")
    return cmds


def import_names(value: Any, where: Where) -> tuple[str, ...]:
    names = str_list(value, where)
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


def _requirement(r: str, where: Where) -> Requirement:
    try:
        return Requirement(r)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise where.error(
            f"invalid requirement {r!r} in {where.section} {where.key}: {reason}",
            fix="write PEP 508 requirements, e.g. 'numpy>=1.26' or 'scipy'",
        ) from exc


def requirements(value: Any, where: Where) -> tuple[str, ...]:
    reqs = str_list(value, where)
    for r in reqs:
        _requirement(r, where)
    return reqs


_NAME_GLOB = re.compile(r"[A-Za-z0-9*?\[\]][A-Za-z0-9._*?\[\]!-]*\Z")


def requirement_names(value: Any, where: Where) -> tuple[str, ...]:
    names = str_list(value, where)
    for n in names:
        if not _NAME_GLOB.match(n):
            raise where.error(
                f"{n!r} in {where.section} {where.key} is not a project name or name pattern",
                fix="name the requirement to remove, e.g. 'torch' or 'nvidia-*-cu12'",
            )
    return names


def requirement_updates(value: Any, where: Where) -> tuple[str, ...]:
    """`numpy<2` (replace numpy's requirement, markers kept) or `a->b` (rename a to b)."""
    updates = str_list(value, where)
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


def env(value: Any, where: Where) -> dict[str, str]:
    if not isinstance(value, dict):
        raise where.error(
            f"{where.key!r} in {where.section} must be a table of strings, not {type_name(value)}"
        )
    for k, v in value.items():
        if not _ENV_NAME.match(k):
            raise where.error(f"{k!r} in {where.section} env is not an environment variable name")
        if not isinstance(v, str):
            raise where.error(f"env.{k} in {where.section} must be a string, not {type_name(v)}")
    return dict(value)


def config_settings(value: Any, where: Where) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise where.error(
            f"{where.key!r} in {where.section} must be a table, not {type_name(value)}",
            fix='e.g. config_settings = { "setup-args" = ["-Dblas=flexiblas"] }',
        )
    out: list[tuple[str, str]] = []
    for k, v in value.items():
        if not k or "=" in k:
            raise where.error(f"{k!r} in {where.section} config_settings is not a setting name")
        values = v if isinstance(v, list) else [v]
        if not all(isinstance(x, str) for x in values):
            raise where.error(
                f"config_settings.{quote(k)} in {where.section} must be a string or a list of "
                f"strings, not {type_name(v)}"
            )
        out += [(k, x) for x in values]
    return tuple(out)


def specifier(value: Any, where: Where) -> str:
    spec = nonempty(value, where)
    try:
        SpecifierSet(spec)
    except InvalidSpecifier as exc:
        raise where.error(
            f"invalid version specifier {spec!r} in {where.section} {where.key}",
            fix="use a PEP 440 specifier, e.g. '>=3.10' or '>=3.10,<3.13'",
        ) from exc
    return spec


def template(value: Any, where: Where) -> str:
    """A string in which `{version}` is the only placeholder."""
    text = nonempty(value, where)
    try:
        names = {f for _, f, _, _ in Formatter().parse(text) if f is not None}
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


def url(value: Any, where: Where) -> str:
    url = template(value, where)
    if not re.match(r"(https?|file)://", url):
        raise where.error(
            f"{where.key} in {where.section} must be an http(s):// or file:// URL, not {url!r}"
        )
    return url


def sha256(value: Any, where: Where) -> str:
    sha = string(value, where).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise where.error(
            f"sha256 in {where.section} must be 64 hex digits, not {value!r}",
            fix="sha256sum FILE gives it",
        )
    return sha


def git(value: Any, where: Where) -> str:
    url = nonempty(value, where)
    if not re.match(r"(https?|ssh|git|file)://|[\w.-]+@[\w.-]+:", url):
        raise where.error(f"git in {where.section} is not a repository URL: {url!r}")
    return url


def project_name(value: Any, where: Where) -> str:
    name = nonempty(value, where)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name):
        raise where.error(f"{name!r} in {where.section} {where.key} is not a project name")
    return name


def patches(value: Any, where: Where) -> tuple[str, ...]:
    names = str_list(value, where)
    folder = where.path.parent / PATCHES_DIR
    for n in names:
        if not n.strip() or n.startswith("/") or ".." in Path(n).parts:
            raise where.error(
                f"patch {n!r} in {where.section} patches must be a file name under {show(folder)}/"
            )
        if not (folder / n).is_file():
            raise where.error(
                f"patch {n!r} in {where.section} patches not found: {show(folder / n)}",
                fix=f"add the file to {show(folder)}/ or correct the name",
            )
    return names


_APT = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?\Z")


def apt(value: Any, where: Where) -> tuple[str, ...]:
    pkgs = str_list(value, where)
    for p in pkgs:
        if not _APT.match(p):
            raise where.error(f"{p!r} in {where.section} apt is not a Debian package name")
    return pkgs


def modules(value: Any, where: Where) -> tuple[str, ...]:
    mods = str_list(value, where)
    for m in mods:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*", m):
            raise where.error(f"{m!r} in {where.section} {where.key} is not a module name")
    return mods


def suffix(value: Any, where: Where) -> str:
    s = string(value, where)
    if not re.fullmatch(r"[-_.]?[A-Za-z0-9]+([-_.][A-Za-z0-9]+)*", s):
        raise where.error(
            f"suffix {s!r} in {where.section} cannot end a project name",
            fix='e.g. suffix = "-gpu"',
        )
    return s


def local_tags(value: Any, where: Where) -> tuple[str, ...]:
    tags = str_list(value, where)
    for t in tags:
        if not re.fullmatch(r"[A-Za-z0-9]+", t):
            raise where.error(
                f"local tag {t!r} in {where.section} must be letters and digits",
                fix='e.g. local_tags = ["torch27"] gives 1.0+torch27.computecanada',
            )
    return tags


def accelerators(value: Any, where: Where) -> tuple[str, ...]:
    accs = str_list(value, where)
    for a in accs:
        if not re.fullmatch(r"cpu|cuda\d+", a):
            raise where.error(
                f"accelerator {a!r} in {where.section} is not cpu or cudaNN",
                fix='e.g. accelerators = ["cpu", "cuda12", "cuda13"]',
            )
    return accs


def cuda_archs(value: Any, where: Where) -> str:
    from builder.errors import ConfigError
    from builder.targets.gpu import GpuArchs

    text = string(value, where)
    try:
        GpuArchs.parse_cmake(text)
    except ConfigError as exc:
        raise where.error(f"cuda_archs in {where.section}: {exc.message}", exc.fix) from None
    return text


def site_folders(value: Any, where: Where) -> tuple[str, ...]:
    folders = str_list(value, where)
    for f in folders:
        parts = f.split("/")
        if not f or f.startswith("/") or "$" in f or any(p in ("", ".", "..") for p in parts):
            raise where.error(
                f"{f!r} in {where.section} {where.key} is not a folder inside site-packages",
                fix='name the package and its library folder, e.g. "torch/lib"',
            )
    return folders


def vendored_patterns(value: Any, where: Where) -> tuple[str, ...]:
    entries = str_list(value, where)
    for e in entries:
        pattern, arrow, soname = (p.strip() for p in e.partition(RENAME))
        if (
            not pattern
            or "/" in pattern
            or (arrow and not re.fullmatch(r"lib\S+\.so[.\d]*", soname))
        ):
            raise where.error(
                f"{e!r} in {where.section} {where.key} is not a library pattern",
                fix="a file or soname pattern ('libffi*'), or 'pattern->libNAME.so.N'",
            )
    return entries
