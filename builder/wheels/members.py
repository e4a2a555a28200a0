"""The one owner of "a wheel member stays inside the wheel": no absolute or `..` path, no
symbolic link whose target leaves the wheel's root. `inspect`, `repair` and `wheel-edit` all
refuse such a wheel through `escaping_member` before reading or rewriting anything."""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import PurePosixPath

_DRIVE = re.compile(r"^[A-Za-z]:")
# A link target longer than this is not a path a wheel would carry; read no more of it.
_MAX_LINK = 4096


def escapes(name: str) -> bool:
    """Whether a member path (or a link target) is absolute, drive-rooted or climbs with `..`."""
    norm = name.replace("\\", "/")
    return norm.startswith("/") or bool(_DRIVE.match(norm)) or ".." in PurePosixPath(norm).parts


def _link_leaves_root(member: str, target: str) -> bool:
    norm = target.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        return True
    depth = len(PurePosixPath(member.replace("\\", "/")).parts) - 1  # folders above the link
    for part in PurePosixPath(norm).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix mode in the high 16 bits of external_attr (create_system 3); zero elsewhere.
    return stat.S_ISLNK(info.external_attr >> 16)


def escaping_member(zf: zipfile.ZipFile) -> str | None:
    """Why the first member that leaves the wheel's root does so, or None when none does."""
    for info in zf.infolist():
        if escapes(info.filename):
            return f"member {info.filename!r} escapes the wheel's root (absolute or '..' path)"
        if is_symlink(info):
            with zf.open(info) as fh:
                target = fh.read(_MAX_LINK).decode("utf-8", "replace")
            if _link_leaves_root(info.filename, target):
                return (
                    f"member {info.filename!r} is a symbolic link to {target!r}, which escapes "
                    "the wheel's root"
                )
    return None


REFUSE_FIX = "do not install this file; rebuild the wheel with a standard backend"
