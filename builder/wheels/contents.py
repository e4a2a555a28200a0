"""What a wheel holds that Python can import: the names the import test imports when a recipe
names none. They come from the files the wheel holds (the same paths its RECORD lists), not from
`top_level.txt`, which setuptools writes from the project's configuration whatever the wheel
ends up holding; `top_level.txt` is only a cross-check whose disagreement is reported.

Importable at the top of site-packages (the root, or `.data/purelib|platlib`): a package
(a folder with `__init__.py`), a module (`*.py`), an extension module (`*.cpython-3XY-*.so`,
`*.abi3.so`), and under a namespace package (a folder of importables without `__init__`) the
first regular packages and modules inside it, dotted (`ruamel.yaml.clib`): importing a
namespace alone runs nothing of the wheel. Left out: `*.dist-info`, the other `.data` folders,
`__pycache__`, folders that hold nothing importable (`pkg.libs`), top-level `test`/`tests`
(shipped by accident, they import test-only tools and clash between distributions), and
private pure-Python names (`_virtualenv.py` hooks) unless nothing else is left; a private
extension module (`_foo.abi3.so`) is compiled code of the wheel and always imported.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

_EXTENSION = re.compile(r"^(?P<name>[^.]+)\.(?:cpython-3\d+[^.]*|abi3)\.so$")
_TESTS = frozenset({"test", "tests"})


@dataclass(frozen=True)
class ImportNames:
    names: tuple[str, ...]  # what the import test imports, dotted, sorted
    top_level_txt: tuple[str, ...] | None  # what top_level.txt says; None: the wheel has none
    held: tuple[str, ...]  # every top-level importable name the wheel holds, tests included

    @property
    def disagreement(self) -> str | None:
        """How `top_level.txt` differs from what the wheel holds, or None where it agrees."""
        if self.top_level_txt is None:
            return None
        listed, held = set(self.top_level_txt), set(self.held)
        parts = []
        if missing := sorted(listed - held):
            parts.append(f"names {', '.join(missing)}, which the wheel does not hold")
        if extra := sorted(held - listed):
            parts.append(f"leaves out {', '.join(extra)}, which the wheel holds")
        return f"top_level.txt {' and '.join(parts)}" if parts else None


def import_names(wheel: Path) -> ImportNames:
    """The import names of `wheel` (see the module docstring for the rules)."""
    with zipfile.ZipFile(wheel) as zf:
        files = [i.filename for i in zf.infolist() if not i.is_dir()]
        info = _dist_info(files)
        text = None
        if info and f"{info}/top_level.txt" in files:
            text = zf.read(f"{info}/top_level.txt").decode("utf-8", "replace")
    paths = _site_packages_paths(files, info)
    found = _importables(paths, ())
    held = sorted({n.split(".", 1)[0] for n, _ in found})
    wanted = [(n, ext) for n, ext in found if n.split(".", 1)[0] not in _TESTS]
    private = {n for n, ext in wanted if not ext and any(p.startswith("_") for p in n.split("."))}
    names = sorted({n for n, _ in wanted} - private) or sorted(private)
    listed = None
    if text is not None:
        listed = tuple(sorted({ln.strip().split("/")[0] for ln in text.splitlines() if ln.strip()}))
    return ImportNames(tuple(names), listed, tuple(held))


def _dist_info(files: list[str]) -> str | None:
    infos = {f.split("/", 1)[0] for f in files if "/" in f}
    infos = sorted(d for d in infos if d.endswith(".dist-info"))
    return infos[0] if len(infos) == 1 else None


def _site_packages_paths(files: list[str], info: str | None) -> list[tuple[str, ...]]:
    """Each file's path as installed under site-packages, split; everything else left out."""
    data = info.removesuffix(".dist-info") + ".data" if info else None
    out = []
    for name in files:
        if data:
            for root in (f"{data}/purelib/", f"{data}/platlib/"):
                if name.startswith(root):
                    name = name[len(root) :]
                    break
        head = name.split("/", 1)[0]
        if head.endswith((".dist-info", ".data")):
            continue
        parts = tuple(name.split("/"))
        if "__pycache__" not in parts:
            out.append(parts)
    return out


def _module_name(filename: str) -> tuple[str, bool] | None:
    """(name, is extension module) of a file Python imports, or None."""
    if filename.endswith(".py"):
        name, ext = filename[:-3], False
    elif m := _EXTENSION.match(filename):
        name, ext = m.group("name"), True
    else:
        return None
    return (name, ext) if name.isidentifier() else None


def _importables(paths: list[tuple[str, ...]], prefix: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(dotted name, is extension module) of what `import` finds in the folder `prefix`:
    modules, regular packages, and inside namespace packages what they hold."""
    depth = len(prefix)
    here = [p[depth:] for p in paths if p[:depth] == prefix and len(p) > depth]
    found: list[tuple[str, bool]] = []
    folders = sorted({p[0] for p in here if len(p) > 1})
    for folder in folders:
        if not folder.isidentifier():
            continue
        inside = [p[1] for p in here if p[0] == folder and len(p) == 2]
        if any((m := _module_name(f)) and m[0] == "__init__" for f in inside):
            found.append((".".join((*prefix, folder)), False))
        else:  # a namespace package: what it holds, or nothing when it holds nothing
            found += _importables(paths, (*prefix, folder))
    for p in here:
        if len(p) == 1 and (m := _module_name(p[0])) and m[0] != "__init__":
            found.append((".".join((*prefix, m[0])), m[1]))
    return found
