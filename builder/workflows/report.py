"""`cbuild report WHEELHOUSE`: what a maintainer looks at before syncing a wheelhouse to the
site. Every wheel with where it was placed, how its manifest says it was tested (QEMU at the
exact level, natively on a richer host, or not and why), the highest x86-64 level its code
contains against the level its folder promises, the GPU architectures of CUDA wheels, the label
and tag findings of `cbuild inspect`, wheels without a manifest, and, against another
wheelhouse, what a sync would add or replace. Data first (`as_dict`); the HTML is the data in
one self-contained page (builder/data/report.html)."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.data import read_text
from builder.errors import ConfigError
from builder.targets.model import Stack, load_stack, stack_names
from builder.wheels.isascan import level_index

DATA_MARK = "/*CBUILD_REPORT_DATA*/"


@dataclass(frozen=True)
class WheelRow:
    package: str
    version: str
    file: str
    folder: str  # relative to the wheelhouse
    sha256: str
    target: str | None  # the manifest's target id
    tested: str  # qemu | native | not-tested | failed | unknown (no manifest)
    test_detail: str
    promised: str | None  # the level the folder promises; None: pure (any CPU)
    contains: str | None  # the highest level of its x86 code; None: none
    level_ok: bool
    gpu_archs: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # label, tag and manifest problems, each a sentence

    @property
    def column(self) -> str:
        """The matrix column: the manifest's target, else the folder."""
        return self.target or f"({self.folder})"


@dataclass(frozen=True)
class SyncRow:
    path: str
    action: str  # add | replace | only-there


@dataclass
class Report:
    wheelhouse: str
    rows: list[WheelRow]
    against: str | None = None
    sync: list[SyncRow] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(bool(r.problems) or not r.level_ok for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        rows = [{**asdict(r), "column": r.column} for r in self.rows]
        columns = sorted({r.column for r in self.rows})
        return {
            "wheelhouse": self.wheelhouse,
            "wheels": rows,
            "columns": columns,
            "packages": sorted({f"{r.package} {r.version}" for r in self.rows}),
            "without_manifest": [r.file for r in self.rows if r.target is None],
            "problems": self.problems,
            "against": self.against,
            "sync": [asdict(s) for s in self.sync],
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _promise(folder: str, stacks: list[Stack]) -> tuple[bool, str | None]:
    """Whether `folder` is a wheelhouse folder, and the level it promises (None: any CPU)."""
    if folder == "generic":
        return True, None
    for st in stacks:
        for lv in st.levels:
            if st.folder_for_level(lv) == folder:
                return True, st.baseline_level if lv == "generic" else lv
    return False, None


def _tested(manifest: Any) -> tuple[str, str]:
    if manifest is None:
        return "unknown", "no manifest beside the wheel"
    test = manifest.test
    if test is None:
        return "unknown", "the manifest records no test"
    how = f"{test.how} {test.detail}".lower()
    if test.status != "tested" and "fail" in test.status:
        return "failed", test.detail or test.status
    if test.status != "tested":
        return "not-tested", test.detail or test.how or test.status
    if "qemu" in how:
        return "qemu", test.detail or test.how
    return "native", test.detail or test.how


def wheel_row(wheel: Path, root: Path, stacks: list[Stack]) -> WheelRow:
    from builder.wheels.cuda import scan_wheel_device_code
    from builder.wheels.info import inspect_wheel

    folder = wheel.parent.relative_to(root).as_posix()
    known, promised = _promise(folder, stacks)
    info = inspect_wheel(wheel)
    problems = [f.message for f in info.findings]
    if not known:
        problems.append(f"{folder}/ is not a wheelhouse folder: no node's pip reads it")
    if info.manifest_error:
        problems.append(f"unreadable manifest: {info.manifest_error}")
    m = info.manifest
    tested, detail = _tested(m)
    contains = info.highest_level
    level_ok = True
    if contains is not None and promised is None:
        level_ok = False
        problems.append(f"compiled code (up to {contains}) in the pure folder {folder}/")
    elif contains is not None and level_index(contains) > level_index(promised or contains):
        level_ok = False
        problems.append(f"contains {contains} instructions; {folder}/ promises {promised}")
    archs: tuple[str, ...] = ()
    target = m.target if m is not None else None
    if target and str(target.get("accelerator", "cpu")).startswith("cuda"):
        codes = scan_wheel_device_code(wheel)
        archs = tuple(sorted({a for c in codes for a in (*c.sass, *c.ptx)}))
    if m is not None and m.sha256 and m.sha256 != (sha := _sha256(wheel)):
        problems.append(f"sha256 {sha[:12]} differs from the manifest's {m.sha256[:12]}")
    return WheelRow(
        package=info.name or wheel.name.split("-")[0],
        version=info.version or "?",
        file=wheel.name,
        folder=folder,
        sha256=m.sha256 if m is not None and m.sha256 else _sha256(wheel),
        target=(target or {}).get("id") if target else None,
        tested=tested,
        test_detail=detail,
        promised=promised,
        contains=contains,
        level_ok=level_ok,
        gpu_archs=archs,
        problems=tuple(problems),
    )


def _wheels(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.whl") if p.is_file())


def build_report(wheelhouse: Path, against: Path | None = None) -> Report:
    root = wheelhouse.resolve()
    if not root.is_dir():
        raise ConfigError(f"{wheelhouse}: no such wheelhouse", fix="pass the wheelhouse's root")
    stacks = [load_stack(n) for n in stack_names()]
    rows = [wheel_row(w, root, stacks) for w in _wheels(root)]
    report = Report(str(root), rows)
    if against is not None:
        other = against.resolve()
        if not other.is_dir():
            raise ConfigError(f"--against {against}: no such folder", fix="pass a wheelhouse root")
        report.against = str(other)
        theirs = {w.relative_to(other).as_posix(): w for w in _wheels(other)}
        for r in rows:
            rel = f"{r.folder}/{r.file}"
            if rel not in theirs:
                report.sync.append(SyncRow(rel, "add"))
            elif _sha256(theirs[rel]) != r.sha256:
                report.sync.append(SyncRow(rel, "replace"))
        ours = {f"{r.folder}/{r.file}" for r in rows}
        report.sync += [SyncRow(p, "only-there") for p in sorted(theirs) if p not in ours]
    return report


def render_html(report: Report) -> str:
    """One self-contained page: the template with the report's data inlined (no network)."""
    data = json.dumps(report.as_dict()).replace("</", "<\\/")  # cannot close the script
    page = read_text("report.html")
    page = page.replace("{{title}}", html.escape(f"cbuild report: {report.wheelhouse}"))
    return page.replace(DATA_MARK, data)
