"""Inspect a wheel, auditwheel-style: analysis only, returns data and changes nothing.

A report holds the wheel's tags (file name and WHEEL) and how they agree with each other and with
the content, its local version label, its requirements, and for every ELF file in it the loader
facts and a static scan of the x86 instruction-set extensions its code contains (`isascan`).
`explain_placement` says which wheelhouse folder a wheel belongs in, with the placement rules.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import CbuildError
from builder.manifest import Manifest, ManifestError
from builder.targets.model import Stack, load_stack
from builder.wheelhouse import layout, placement
from builder.wheels import contents, members, repair
from builder.wheels.cuda import DeviceCode, scan_wheel_device_code
from builder.wheels.isascan import ElfIsa, ElfScanError, level_index, scan_members

DEFAULT_STACK = "gentoo2023"
CONTAINS_NOTE = (
    "The instruction scan reports what the code CONTAINS, not what it REQUIRES: libraries that "
    "dispatch at run time (numpy, OpenBLAS) carry higher-level code paths they only take on "
    "CPUs that have them. Only a run under a lower CPU model (the emulated test) decides what "
    "a wheel requires."
)
# The requirement patterns the site removes: the same default `repair_wheel` applies.
REMOVED_REQUIREMENTS: tuple[str, ...] = repair.repair_wheel.__kwdefaults__["remove_requirements"]
_SITE_PLATFORM = "linux_x86_64"
# Findings that `repair_wheel` fixes: a wheel carrying them is not ready for the wheelhouse.
_NEEDS_REPAIR = frozenset(
    {"pure-tag-with-elf", "not-site-platform", "no-local-label", "nvidia-requirement"}
)


class WheelInspectError(CbuildError):
    """A file that cannot be read as a wheel at all (missing, not a zip, unsafe paths)."""

    exit_code = 2


@dataclass(frozen=True)
class Finding:
    code: str  # stable, for scripts: "pure-tag-with-elf", "nvidia-requirement", ...
    message: str


@dataclass(frozen=True)
class ElfEntry:
    member: str  # path inside the wheel
    size: int
    isa: ElfIsa | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "size": self.size,
            "isa": self.isa.as_dict() if self.isa else None,
            "error": self.error,
        }


@dataclass
class WheelReport:
    path: str
    filename: str
    name: str | None
    version: str | None
    file_tags: list[str]  # expanded from the file name
    wheel_tags: list[str]  # the WHEEL file's Tag lines
    root_is_purelib: bool | None
    local_label: str | None  # the whole local part, e.g. "torch27.computecanada"
    stack: str
    stack_label: str
    has_stack_label: bool
    requirements: list[str]
    flagged_requirements: list[str]
    modules: list[str]
    shared_libraries: list[str]  # members named like shared libraries
    elfs: list[ElfEntry]
    highest_level: str | None  # across all ELF files; None: no x86 code
    above: dict[str, int]  # level -> instructions above it, all ELF files together
    outside_levels: dict[str, int]
    manifest: Manifest | None  # `<wheel>.json` beside the wheel, when present and readable
    findings: list[Finding] = field(default_factory=list)
    manifest_error: str | None = None  # why the manifest beside the wheel is unreadable
    # Each ELF file's GPU code (builder.wheels.cuda): SASS and PTX in its .nv_fatbin.
    device_code: list[DeviceCode] = field(default_factory=list)

    @property
    def is_pure(self) -> bool:
        """Pure by content and tag: no ELF file and an `any` platform tag."""
        return not self.elfs and all(t.endswith("-any") for t in self.file_tags or ["-any"])

    @property
    def contains(self) -> str:
        if not self.elfs:
            return "no compiled code"
        if self.highest_level is None:
            return "no x86 code"
        above = [f"{n:,} above {lv}" for lv, n in self.above.items() if n]
        out = f"instructions up to {self.highest_level}"
        if above:
            out += f" ({', '.join(above)})"
        if self.outside_levels:
            names = ", ".join(f"{k} {v:,}" for k, v in self.outside_levels.items())
            out += f"; outside the x86-64 levels: {names}"
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elfs"] = [e.as_dict() for e in self.elfs]
        d["is_pure"] = self.is_pure
        d["contains"] = self.contains
        d["contains_note"] = CONTAINS_NOTE
        error = d.pop("manifest_error")
        d["manifest"] = self.manifest.as_dict() if self.manifest else error and {"error": error}
        return d

    def text(self) -> str:
        """A short readable block."""
        lines = [self.filename]
        label = self.local_label or "none"
        mark = "yes" if self.has_stack_label else "no"
        lines.append(
            f"  package: {self.name} {self.version} (local label: {label}; "
            f"{self.stack} label {self.stack_label!r}: {mark})"
        )
        lines.append(f"  tags: {', '.join(self.file_tags) or '-'} (file name)")
        if sorted(self.wheel_tags) != sorted(self.file_tags):
            lines.append(f"        {', '.join(self.wheel_tags) or '-'} (WHEEL)")
        if self.requirements:
            lines.append(f"  requires: {', '.join(self.requirements)}")
        if self.manifest is not None or self.manifest_error:
            tid = self.manifest.target_id if self.manifest else None
            lines.append(f"  manifest: present (target {tid or '?'})")
        for e in self.elfs:
            lines.append(f"  ELF {e.member} ({e.size:,} bytes)")
            if e.error:
                lines.append(f"    unreadable: {e.error}")
                continue
            assert e.isa is not None
            lines += [f"    {s}" for s in _elf_lines(e.isa)]
            if gpu := next((c for c in self.device_code if c.path == e.member), None):
                lines.append(f"    GPU code: {_gpu_line(gpu)}")
        lines.append(f"  contains: {self.contains}")
        if self.elfs:
            lines.append("  (what the code contains; runtime dispatch makes it differ from what")
            lines.append("   it requires, which only the emulated test decides)")
        if self.findings:
            lines.append("  findings:")
            lines += [f"    - [{f.code}] {f.message}" for f in self.findings]
        else:
            lines.append("  findings: none")
        return "\n".join(lines)


def _gpu_line(code: DeviceCode) -> str:
    if not code.has_device_code:
        return "none (host code only)"
    sass = ", ".join(code.sass) or "no SASS"
    return sass + (f" + PTX {', '.join(code.ptx)}" if code.ptx else " (no PTX)")


def _elf_lines(isa: ElfIsa) -> list[str]:
    out = []
    if not isa.scanned:
        out.append(f"not x86 code ({isa.machine}): not scanned")
    else:
        above = ", ".join(f"{n:,} above {lv}" for lv, n in isa.above.items() if n) or "none"
        out.append(
            f"contains up to {isa.highest_level or '-'}: {isa.instructions:,} instructions, "
            f"above each level: {above}"
        )
        if isa.outside_levels:
            names = ", ".join(f"{k} {v:,}" for k, v in isa.outside_levels.items())
            out.append(f"outside the x86-64 levels: {names}")
    out.append(f"needs: {', '.join(isa.needed) or '-'}")
    if isa.rpath or isa.runpath:
        out.append(f"RPATH: {':'.join(isa.rpath) or '-'}  RUNPATH: {':'.join(isa.runpath) or '-'}")
    versions = ", ".join(f"{k}_{v}" for k, v in isa.symbol_versions.items()) or "-"
    out.append(f"symbol versions (max): {versions}")
    out.append(f"ISA note: {isa.isa_needed or 'none'}")
    return out


# ---------------------------------------------------------------------------- reading


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise WheelInspectError(f"no such file: {path}", fix="check the path")
    if path.is_dir():
        raise WheelInspectError(f"{path} is a directory, not a wheel", fix="pass a .whl file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelInspectError(
            f"{path.name} is not a wheel: not a zip archive ({exc})",
            fix="a wheel is a zip file; download or build it again",
        ) from exc
    why = members.escaping_member(zf)
    if why:
        zf.close()
        raise WheelInspectError(f"{path.name}: {why}; refusing to read it", fix=members.REFUSE_FIX)
    return zf


def _headers(zf: zipfile.ZipFile, member: str) -> list[tuple[str, str]]:
    fields, _ = repair._split_headers(zf.read(member).decode("utf-8", "replace"))
    return [(repair._field_key(raw), repair._field_value(raw)) for raw in fields]


def _read_manifest(path: Path) -> tuple[Manifest | None, str | None]:
    """The manifest beside the wheel, or why it cannot be read."""
    try:
        return Manifest.beside(path), None
    except ManifestError as exc:
        return None, exc.message


def inspect_wheel(path: Path | str, stack: str = DEFAULT_STACK) -> WheelReport:
    """Everything a wheel says about itself and what its code contains. Raises
    `WheelInspectError` only for a file that cannot be read as a zip at all."""
    path = Path(path)
    st = load_stack(stack)
    findings: list[Finding] = []

    def flag(code: str, message: str) -> None:
        findings.append(Finding(code, message))

    name = version = None
    file_tags: list[str] = []
    try:
        dist, fversion, _build, tags = parse_wheel_filename(path.name)
        name, version = str(dist), str(fversion)
        file_tags = sorted(str(t) for t in tags)
    except InvalidWheelFilename as exc:
        flag("bad-filename", f"not a valid wheel file name: {exc}")

    with _open_zip(path) as zf:
        members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
        wheel_tags: list[str] = []
        purelib: bool | None = None
        requirements: list[str] = []
        modules: list[str] = []
        try:
            info_dir = repair._dist_info_dir(members)
        except repair.RepairError as exc:
            info_dir = None
            flag("no-dist-info", exc.message)
        if info_dir is not None:
            if f"{info_dir}/WHEEL" in members:
                wheel = _headers(zf, f"{info_dir}/WHEEL")
                wheel_tags = sorted(v for k, v in wheel if k == "tag")
                pl = [v.lower() for k, v in wheel if k == "root-is-purelib"]
                purelib = pl[0] == "true" if pl else None
            else:
                flag("no-wheel-file", f"{info_dir}/WHEEL is missing")
            if f"{info_dir}/METADATA" in members:
                meta = dict(_headers(zf, f"{info_dir}/METADATA"))
                mname, mversion = meta.get("name"), meta.get("version")
                if name and mname and canonicalize_name(mname) != canonicalize_name(name):
                    flag("name-mismatch", f"file name says {name}, METADATA says {mname}")
                if version and mversion and _norm(mversion) != _norm(version):
                    flag("version-mismatch", f"file name says {version}, METADATA {mversion}")
                name, version = name or mname, version or mversion
                requirements = repair.requires_dist(path)
                found = contents.import_names(path)
                modules = list(found.names)
                if found.disagreement:
                    flag("top-level-mismatch", found.disagreement)
            else:
                flag("no-metadata", f"{info_dir}/METADATA is missing")

        shared = sorted(n for n in members if repair._is_shared_lib(n))
        wheel_isa = scan_members(zf)
        elfs = [ElfEntry(m.member, m.size, m.isa, m.error) for m in wheel_isa.members]
        elf_names = {e.member for e in elfs}
        for n in shared:
            if n not in elf_names:
                flag("shared-lib-not-elf", f"{n} is named like a shared library but is not ELF")

    # Tags: the file name, WHEEL and the content must tell one story.
    if wheel_tags and file_tags and set(wheel_tags) != set(file_tags):
        flag(
            "tags-mismatch",
            f"file name tags ({', '.join(file_tags)}) differ from WHEEL's "
            f"({', '.join(wheel_tags)})",
        )
    plats = {t.rsplit("-", 1)[1] for t in file_tags}
    if elfs and "any" in plats:
        flag(
            "pure-tag-with-elf",
            f"tagged for any platform ({', '.join(file_tags)}) but contains {len(elfs)} ELF "
            f"file(s) ({', '.join(e.member for e in elfs[:3])}"
            f"{', ...' if len(elfs) > 3 else ''}); it needs a platform tag (cbuild's repair "
            "retags it)",
        )
    if elfs and purelib:
        flag("purelib-with-elf", "WHEEL says Root-Is-Purelib: true but the wheel has ELF files")
    if not elfs and plats and "any" not in plats:
        flag(
            "platform-tag-without-elf",
            f"platform tag {', '.join(sorted(plats))} but no ELF file: a pure wheel mis-tagged?",
        )
    odd = sorted(p for p in plats if p not in {"any", _SITE_PLATFORM})
    if odd:
        flag(
            "not-site-platform",
            f"platform tag {', '.join(odd)}: the site's wheels are tagged {_SITE_PLATFORM} "
            "(repair un-manylinux-izes them)",
        )

    # The local version label, as repair.local_version writes it: the stack's label last.
    local = None
    if version:
        try:
            local = Version(version).local
        except InvalidVersion:
            flag("bad-version", f"version {version!r} is not PEP 440")
    has_label = bool(local) and local.split(".")[-1] == st.local_label
    if version and not has_label:
        flag("no-local-label", f"version {version} lacks the {st.name} label +{st.local_label}")

    flagged = [r for r in requirements if _removed(r)]
    for r in flagged:
        flag(
            "nvidia-requirement",
            f"requires {r}: the stack provides CUDA as modules (repair removes it)",
        )

    # Content versus the ISA note: code above the note's level runs only if dispatched.
    for e in elfs:
        if e.error:
            flag("unreadable-elf", f"{e.member}: {e.error}")
        elif e.isa and not e.isa.scanned:
            flag("not-x86", f"{e.member} is {e.isa.machine} code, not x86-64")
        elif (
            e.isa
            and e.isa.isa_needed
            and e.isa.highest_level
            and level_index(e.isa.highest_level) > level_index(e.isa.isa_needed)
        ):
            flag(
                "above-isa-note",
                f"{e.member} contains {e.isa.highest_level} instructions but its ISA note "
                f"needs only {e.isa.isa_needed}: dispatched at run time, or mis-noted",
            )

    highest, above, outside = wheel_isa.highest_level, wheel_isa.above, wheel_isa.outside_levels
    manifest, manifest_error = _read_manifest(path)
    return WheelReport(
        path=str(path),
        filename=path.name,
        name=name,
        version=version,
        file_tags=file_tags,
        wheel_tags=wheel_tags,
        root_is_purelib=purelib,
        local_label=local,
        stack=st.name,
        stack_label=st.local_label,
        has_stack_label=has_label,
        requirements=requirements,
        flagged_requirements=flagged,
        modules=modules,
        shared_libraries=shared,
        elfs=elfs,
        highest_level=highest,
        above=above,
        outside_levels=outside,
        manifest=manifest,
        findings=findings,
        manifest_error=manifest_error,
        device_code=_device_code(path) if elfs else [],
    )


def _device_code(path: Path) -> list[DeviceCode]:
    """The GPU code of each ELF file; a file the scan cannot read is reported by the ISA
    scan already (its ELF entry's error)."""
    try:
        return list(scan_wheel_device_code(path))
    except ElfScanError:
        return []


def _norm(v: str) -> str:
    try:
        return str(Version(v))
    except InvalidVersion:
        return v


def _removed(requirement: str) -> bool:
    name = repair._requirement_name(requirement)
    return bool(name) and any(fnmatchcase(name, p) for p in REMOVED_REQUIREMENTS)


# ---------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class PlacementExplanation:
    wheel: str
    stack: str
    level: str  # the placement level: "generic" or a level name
    level_source: str  # "manifest" or "static scan"
    folder: str | None  # None: refused or not placed
    reasons: list[str]
    error: str | None
    already_there: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        where = f"{self.folder}/" if self.folder else "nowhere (refused)"
        lines = [f"{self.wheel} -> {where}"]
        lines += [f"  - {r}" for r in self.reasons]
        if self.error:
            lines.append(f"  refused: {self.error}")
        return "\n".join(lines)


def explain_placement(
    wheel: Path | str, wheelhouse: Path | str, stack: str | None = None
) -> PlacementExplanation:
    """Which wheelhouse folder `wheel` belongs in, by the placement planner's rules and the
    wheelhouse's current content. The level comes from the manifest beside the wheel when it
    has one, otherwise from the static instruction scan."""
    wheel, wheelhouse = Path(wheel), Path(wheelhouse)
    report = inspect_wheel(wheel, stack or DEFAULT_STACK)
    reasons: list[str] = []
    target = report.manifest.target if report.manifest else None
    target = target if isinstance(target, dict) else None
    if target and target.get("stack") and not stack:
        stack = str(target["stack"])
    st = load_stack(stack or DEFAULT_STACK)

    if target and isinstance(target.get("level"), str):
        level_name, source = target["level"], "manifest"
        target_id = str(target.get("id") or f"{st.name}-{level_name}")
        reasons.append(
            f"level {level_name!r} from the manifest {wheel.name}.json (built for {target_id})"
        )
    else:
        level_name, source = _infer_level(report, st, reasons)
        target_id = f"{st.name}-{level_name}"
    if report.outside_levels and not report.is_pure:
        names = ", ".join(report.outside_levels)
        reasons.append(
            f"also contains instructions outside every x86-64 level ({names}): no level "
            "folder promises them; they must be dispatched at run time"
        )

    index = layout.scan(wheelhouse, st)
    # Explaining a wheel that is already in the wheelhouse: it is not its own competitor.
    here = _folder_in(wheel, wheelhouse, index)
    if here is not None:
        index[here] = index[here] - {wheel.name}
    cand = placement.Candidate(
        target_id, level_name, wheel, repair.wheel_content_digest(wheel), report.is_pure
    )
    (decision,) = placement.plan([cand], st, index)
    if decision.error is None:
        reasons.append(f"placement rule: {decision.reason}")
    unrepaired = sorted({f.code for f in report.findings} & _NEEDS_REPAIR)
    if unrepaired:
        reasons.append(
            "not ready to place as it is: the site rules need a repair first "
            f"({', '.join(unrepaired)}; see `cbuild inspect`)"
        )
    if here is not None:
        same = decision.folder == here
        reasons.append(
            f"it is in {here}/ now"
            + ("" if same else f", not where it belongs ({decision.folder}/)")
        )
    return PlacementExplanation(
        wheel=wheel.name,
        stack=st.name,
        level=level_name,
        level_source=source,
        folder=decision.folder,
        reasons=reasons,
        error=decision.error,
        already_there=here is not None and decision.folder == here,
    )


def _infer_level(report: WheelReport, st: Stack, reasons: list[str]) -> tuple[str, str]:
    source = "static scan"
    if report.is_pure:
        reasons.append("no manifest; no compiled code and an 'any' platform tag: pure Python")
        return layout.GENERIC, source
    if report.highest_level is None:
        reasons.append("no manifest; no x86 code to scan: placed as a baseline build")
        return layout.GENERIC, source
    base = st.baseline_level
    highest = report.highest_level
    static = (
        "inferred statically from the instructions the code contains (runtime dispatch "
        "can make a wheel contain more than it requires; the emulated test decides that)"
    )
    if level_index(highest) <= level_index(base):
        reasons.append(
            f"no manifest; contains nothing above {base}, the {st.name} baseline every node "
            f"has (highest: {highest}, 0 instructions above {base}): a baseline build, "
            f"{static}"
        )
        return layout.GENERIC, source
    n = report.above.get(base, 0)
    reasons.append(
        f"no manifest; contains {highest} instructions ({n:,} above the {base} baseline): "
        f"built for {highest}, {static}"
    )
    return highest, source


def _folder_in(wheel: Path, wheelhouse: Path, index: dict[str, set[str]]) -> str | None:
    parent = wheel.resolve().parent
    for folder, names in index.items():
        if wheel.name in names and (wheelhouse / folder).resolve() == parent:
            return folder
    return None


__all__ = [
    "CONTAINS_NOTE",
    "ElfEntry",
    "Finding",
    "PlacementExplanation",
    "WheelInspectError",
    "WheelReport",
    "explain_placement",
    "inspect_wheel",
]
