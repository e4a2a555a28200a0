"""The legacy download variables -> `[source]`: pip's project name, a git revision (GitHub's
tag archive, `git+URL@rev`, the git-clone-then-tar idiom) or a URL, which needs its sha256."""

from __future__ import annotations

import re
import shlex
from typing import Any

from packaging.utils import canonicalize_name

from builder.recipes.legacy.expand import Binding, _Scope
from builder.recipes.legacy.variables import Unconvertible

SOURCE_VARS = (
    "PACKAGE_DOWNLOAD_ARGUMENT",
    "PACKAGE_DOWNLOAD_NAME",
    "PACKAGE_DOWNLOAD_METHOD",
    "PACKAGE_DOWNLOAD_CMD",
    "POST_DOWNLOAD_COMMANDS",
    "PACKAGE_FOLDER_NAME",
)


def convert_source(conv: Any, scope: _Scope, own: dict[str, Binding]) -> None:
    """The download variables read together, in their idioms: pip (a project name, a git
    revision, a URL), or the git-clone-then-tar idiom. `conv`: the converter (its expansion,
    tables and omissions)."""
    atoms = scope.atoms

    def get(name: str, mode: str = "template") -> tuple[str, int] | None:
        found = scope.lookup(name)
        return (conv.x(found.value, scope, mode), found.line) if found else None

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
        conv.skip(line, "PACKAGE_DOWNLOAD_*", str(exc))
        return
    handled: set[str] = set()
    arg_v = arg[0] if arg else ""
    try:
        clone = shlex.split(cmd[0].replace("$PACKAGE_DOWNLOAD_ARGUMENT", arg_v)) if cmd else []
    except ValueError:
        clone = []  # not a command line this reads: reported as an unknown download below
    if method.lower() == "git" and "git" in clone[:1] and "clone" in clone[1:2]:
        branch = clone[clone.index("--branch") + 1] if "--branch" in clone else None
        url = next((a for a in clone[2:] if re.match(r"(https?|git|ssh)://|\S+@\S+:", a)), arg_v)
        if branch is None:
            conv.skip(
                lines.get("PACKAGE_DOWNLOAD_CMD", 0),
                "PACKAGE_DOWNLOAD_CMD=...",
                "a git clone without --branch: no tag or commit to pin",
            )
        else:
            rev = re.sub(r"\$\{VERSION(:\?[^}]*)?\}|\$VERSION", "{version}", branch)
            conv.set(atoms, "source", "git", url)
            conv.set(atoms, "source", "rev", rev)
            if "--recursive" in clone or "--recurse-submodules" in clone:
                conv.set(atoms, "source", "submodules", True)
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
    elif arg and (gitsrc := _git_source(arg_v)) and not _custom_download(scope):
        url, rev = gitsrc
        if rev is None:
            conv.skip(
                lines.get("PACKAGE_DOWNLOAD_ARGUMENT", arg[1]),
                f"PACKAGE_DOWNLOAD_ARGUMENT={arg_v}",
                "a git source without a tag or commit (a branch moves): add [source] git and rev",
            )
        else:
            conv.set(atoms, "source", "git", url)
            conv.set(atoms, "source", "rev", rev)
        # pip downloads the archive and unpacks its one top folder: the name and folder
        # settings are about that archive, which a git fetch does not have.
        handled |= {
            "PACKAGE_DOWNLOAD_ARGUMENT",
            "PACKAGE_DOWNLOAD_METHOD",
            "PACKAGE_DOWNLOAD_NAME",
            "PACKAGE_FOLDER_NAME",
        }
    elif arg and re.match(r"(https?|ftp)://", arg_v):
        raw_arg = scope.lookup("PACKAGE_DOWNLOAD_ARGUMENT")
        conv.skip(
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
            conv.skip(
                arg[1],
                f"PACKAGE_DOWNLOAD_ARGUMENT={arg_v}",
                "not a project name (or name==$VERSION)",
            )
        elif canonicalize_name(m[1]) != canonicalize_name(conv.package):
            conv.set(atoms, "source", "pypi_name", m[1])
        handled.add("PACKAGE_DOWNLOAD_ARGUMENT")
    if name and "PACKAGE_DOWNLOAD_NAME" not in handled and "PACKAGE_DOWNLOAD_NAME" in own:
        if canonicalize_name(name[0]) != canonicalize_name(conv.package):
            if "{version}" in name[0] or "." in name[0]:
                conv.set(atoms, "source", "filename", name[0])
            else:
                conv.set(atoms, "source", "pypi_name", name[0])
        handled.add("PACKAGE_DOWNLOAD_NAME")
    if folder and "PACKAGE_FOLDER_NAME" not in handled and "PACKAGE_FOLDER_NAME" in own:
        if folder[0] != conv.package:
            conv.set(atoms, "source", "folder", folder[0])
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
        conv.skip(line, f"{var}={value.raw}", reason)


_GITHUB_ARCHIVE = re.compile(
    r"(https://github\.com/[\w.-]+/[\w.-]+)/archive/(refs/(tags|heads)/)?(.+?)\.(tar\.gz|tgz|zip)"
)
_PIP_GIT = re.compile(r"git\+((?:https?|ssh|git)://[^@#\s]+)(?:@([^#\s]+))?(#egg=[\w.-]+)?")
_BRANCHES = {"master", "main", "develop", "dev"}


def _git_source(arg: str) -> tuple[str, str | None] | None:
    """A download argument that is a git revision: GitHub's archive of a tag or commit
    (`.../archive/refs/tags/v{version}.tar.gz`, the same tree as the tag) or pip's
    `git+URL@rev`. (url, rev); rev None: a branch, which moves."""
    if m := _GITHUB_ARCHIVE.fullmatch(arg):
        rev = m[4]
        return m[1], None if m[3] == "heads" or rev in _BRANCHES else rev
    if m := _PIP_GIT.fullmatch(arg):
        return m[1], m[2]
    return None


def _custom_download(scope: _Scope) -> bool:
    """Whether the config replaces pip's download (its argument then means something else)."""
    cmd = scope.lookup("PACKAGE_DOWNLOAD_CMD")
    method = scope.lookup("PACKAGE_DOWNLOAD_METHOD")
    if method is not None and method.value.literal.strip().lower() not in ("", "pip"):
        return True
    return cmd is not None and not cmd.value.literal.strip().startswith("pip download")
