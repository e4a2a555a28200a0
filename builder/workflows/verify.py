"""`cbuild rebuild` and `cbuild verify`: rebuild a placed wheel from its manifest alone and
compare the two bit for bit; on a difference, say which files differ and how.

The rebuild runs the whole pipeline in fresh containers, from a fresh temporary cache (so its
host folders differ from the original build's) at a later wall clock, with exactly the locked
inputs (`WheelRequest.pinned`: every file checked against its sha256) and the recipe the
manifest recorded. A reproducible build gives the same bytes; anything that leaks the host's
folders or the time shows up as a difference, and the comparison names the files, and for
ELF files the sections, so the cause can be found.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.cache import Cache
from builder.engines.base import Engine
from builder.errors import BuildError, ConfigError
from builder.manifest import Manifest, ManifestError, manifest_path
from builder.pipeline.job import Pipeline
from builder.pipeline.keys import target_spec
from builder.pipeline.model import RunReport, WheelRequest
from builder.progress import TargetProgressFn
from builder.sources import pypi
from builder.targets.model import Target
from builder.targets.model import resolve as resolve_targets
from builder.wheelhouse.layout import stack_folders, wheel_names
from builder.wheels import repair
from builder.workflows.reproduce import (
    NEEDED_TO_REBUILD,
    REBUILD_OTHERWISE,
    check_wheel,
    image_for_target,
    load_manifest,
    recipe_from_manifest,
    search_folders,
    wheelhouse_root,
)

ELF_MAGIC = b"\x7fELF"
_TEXT_SUFFIXES = (
    ".py",
    ".pyi",
    ".pth",
    ".txt",
    ".json",
    ".toml",
    ".cfg",
    ".ini",
    ".md",
    ".rst",
    ".c",
    ".h",
    ".csv",
    ".pyx",
    ".pxd",
)
_DIST_INFO_TEXT = ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt")
DIFF_LINES = 80  # per file, in the text report
STRINGS_SHOWN = 6  # per side and section
_STRINGS_MAX_BYTES = 32 << 20
_CODE_SECTIONS = (".text", ".init", ".fini", ".plt", ".plt.got", ".plt.sec")
_DATA_SECTIONS = (".rodata", ".data", ".data.rel.ro", ".init_array", ".fini_array")


# ---------------------------------------------------------------------------- comparing


@dataclass
class SectionDiff:
    name: str
    placed_size: int | None  # None: no such section
    rebuilt_size: int | None
    what: str  # "size", "content", "only in placed", "only in rebuilt"
    detail: str = ""
    only_in_placed: list[str] = field(default_factory=list)  # printable strings
    only_in_rebuilt: list[str] = field(default_factory=list)


@dataclass
class MemberDiff:
    name: str
    kind: str  # only-in-placed | only-in-rebuilt | text | elf | binary
    summary: str
    diff: list[str] = field(default_factory=list)  # unified diff lines (text)
    sections: list[SectionDiff] = field(default_factory=list)  # ELF
    hints: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    placed: str
    rebuilt: str
    placed_sha256: str
    rebuilt_sha256: str
    members: list[MemberDiff]  # files whose content differs, or that only one wheel has
    zip_notes: list[str]  # archive-level differences (entry times, modes, order, compression)
    same_members: int

    @property
    def identical(self) -> bool:
        return self.placed_sha256 == self.rebuilt_sha256

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical}

    def text(self) -> str:
        if self.identical:
            return "identical"
        out = []
        if self.members:
            total = self.same_members + len(self.members)
            out.append(f"DIFFERENT: {len(self.members)} of {total} files in the wheel differ")
        else:
            out.append("DIFFERENT: every file's content is the same; the zip archive differs")
        for m in self.members:
            out.append(f"  {m.name}: {m.summary}")
            for s in m.sections:
                sizes = _sizes(s)
                out.append(f"      {s.name}: {s.what}{sizes}{f' ({s.detail})' if s.detail else ''}")
                for label, strings in (
                    ("only in placed ", s.only_in_placed),
                    ("only in rebuilt", s.only_in_rebuilt),
                ):
                    for text in strings:
                        out.append(f"          {label}: {text!r}")
            for h in m.hints:
                out.append(f"      hint: {h}")
            shown = m.diff[:DIFF_LINES]
            out += ["      " + ln for ln in shown]
            if len(m.diff) > len(shown):
                out.append(f"      ... {len(m.diff) - len(shown)} more diff lines")
        for n in self.zip_notes:
            out.append(f"  zip: {n}")
        return "\n".join(out)


def _sizes(s: SectionDiff) -> str:
    if s.placed_size is None or s.rebuilt_size is None:
        return f", {s.placed_size if s.placed_size is not None else s.rebuilt_size:,} bytes"
    if s.placed_size == s.rebuilt_size:
        return f", {s.placed_size:,} bytes in both"
    return f", {s.placed_size:,} -> {s.rebuilt_size:,} bytes"


def compare_wheels(placed: Path, rebuilt: Path) -> Comparison:
    """Bit for bit; on a difference, every differing member and how it differs."""
    check_wheel(placed)
    check_wheel(rebuilt)
    sha_a, sha_b = repair.wheel_sha256(placed), repair.wheel_sha256(rebuilt)
    comp = Comparison(str(placed), str(rebuilt), sha_a, sha_b, [], [], 0)
    if sha_a == sha_b:
        return comp
    with zipfile.ZipFile(placed) as za, zipfile.ZipFile(rebuilt) as zb:
        infos_a = {i.filename: i for i in za.infolist()}
        infos_b = {i.filename: i for i in zb.infolist()}
        for name in infos_a.keys() - infos_b.keys():
            comp.members.append(MemberDiff(name, "only-in-placed", "only in the placed wheel"))
        for name in infos_b.keys() - infos_a.keys():
            comp.members.append(MemberDiff(name, "only-in-rebuilt", "only in the rebuilt wheel"))
        for name in [n for n in infos_a if n in infos_b]:
            a, b = za.read(name), zb.read(name)
            if a == b:
                comp.same_members += 1
            else:
                comp.members.append(compare_member(name, a, b))
        comp.zip_notes = _zip_notes(za, zb)
    comp.members.sort(key=lambda m: (m.name.endswith("RECORD"), m.name))
    return comp


def compare_member(name: str, a: bytes, b: bytes) -> MemberDiff:
    sizes = f"{len(a):,} -> {len(b):,} bytes" if len(a) != len(b) else f"{len(a):,} bytes"
    if a.startswith(ELF_MAGIC) and b.startswith(ELF_MAGIC):
        return _compare_elf(name, a, b, sizes)
    if _is_text(name, a) and _is_text(name, b):
        diff = list(
            difflib.unified_diff(
                a.decode("utf-8", "replace").splitlines(),
                b.decode("utf-8", "replace").splitlines(),
                "placed/" + name,
                "rebuilt/" + name,
                n=2,
                lineterm="",
            )
        )
        changed = sum(1 for ln in diff if ln[:1] in "+-" and ln[:3] not in ("+++", "---"))
        return MemberDiff(name, "text", f"text, {sizes}, {changed} lines changed", diff)
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    where = f"first difference at byte {first:#x}" if first is not None else "one is a prefix"
    return MemberDiff(
        name,
        "binary",
        f"binary, {sizes}, sha256 {_sha(a)[:12]} -> {_sha(b)[:12]}, {where}",
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_text(name: str, data: bytes) -> bool:
    base = PurePosixPath(name).name
    if name.endswith(_TEXT_SUFFIXES) or (".dist-info/" in name and base in _DIST_INFO_TEXT):
        return True
    if b"\0" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _elf_sections(data: bytes) -> tuple[list[tuple[str, int, bytes | None]], dict[str, Any]]:
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(data))
    seen: dict[str, int] = {}
    out = []
    for i, sec in enumerate(elf.iter_sections()):
        if i == 0 and not sec.name:
            continue  # the null section
        n = seen[sec.name] = seen.get(sec.name, 0) + 1
        name = sec.name if n == 1 else f"{sec.name}#{n}"
        body = None if sec["sh_type"] == "SHT_NOBITS" else sec.data()
        out.append((name, sec["sh_size"], body))
    header = {k: elf.header[k] for k in ("e_type", "e_machine", "e_entry", "e_flags")}
    header["segments"] = [
        (s["p_type"], s["p_offset"], s["p_vaddr"], s["p_filesz"], s["p_memsz"])
        for s in elf.iter_segments()
    ]
    return out, header


def _compare_elf(name: str, a: bytes, b: bytes, sizes: str) -> MemberDiff:
    from elftools.common.exceptions import ELFError

    try:
        secs_a, head_a = _elf_sections(a)
        secs_b, head_b = _elf_sections(b)
    except (ELFError, ValueError, KeyError) as exc:
        return MemberDiff(name, "binary", f"ELF, {sizes}, unreadable by pyelftools: {exc}")
    by_b = {n: (size, body) for n, size, body in secs_b}
    names_a = {n for n, _, _ in secs_a}
    diffs: list[SectionDiff] = []
    for sname, size, body in secs_a:
        if sname not in by_b:
            diffs.append(SectionDiff(sname, size, None, "only in placed"))
            continue
        size_b, body_b = by_b[sname]
        if size != size_b:
            d = SectionDiff(sname, size, size_b, "size differs")
        elif body != body_b:
            count = sum(1 for x, y in zip(body or b"", body_b or b"", strict=True) if x != y)
            first = next(i for i, (x, y) in enumerate(zip(body, body_b, strict=True)) if x != y)
            d = SectionDiff(
                sname, size, size_b, "content differs", f"{count:,} bytes, first at {first:#x}"
            )
        else:
            continue
        if _has_strings(sname, body, body_b):
            d.only_in_placed, d.only_in_rebuilt = _string_diff(body, body_b)
        diffs.append(d)
    for sname, size, _ in secs_b:
        if sname not in names_a:
            diffs.append(SectionDiff(sname, None, size, "only in rebuilt"))
    m = MemberDiff(name, "elf", f"ELF, {sizes}, {len(diffs)} sections differ", sections=diffs)
    if not diffs:
        m.summary = f"ELF, {sizes}, every section the same: the layout differs"
        if head_a != head_b:
            changed = [k for k in head_a if head_a[k] != head_b[k]]
            m.summary += f" (header: {', '.join(changed)})"
    m.hints = elf_hints([d.name for d in diffs])
    return m


def _has_strings(name: str, a: bytes | None, b: bytes | None) -> bool:
    """Whether the strings of a section are worth listing: not for notes (build-id, a hash)."""
    if a is None or b is None or name.startswith(".note"):
        return False
    return len(a) + len(b) < _STRINGS_MAX_BYTES


def elf_hints(changed: list[str]) -> list[str]:
    """What differing sections usually mean."""
    base = {n.split("#", 1)[0] for n in changed}
    hints = []
    debug = {n for n in base if n.startswith((".debug_", ".zdebug_"))}
    code = base & set(_CODE_SECTIONS)
    data = base & set(_DATA_SECTIONS)
    if code:
        hints.append(
            "machine code differs (" + ", ".join(sorted(code)) + "): another compiler, other "
            "flags (-march, -O), another source, or non-deterministic code generation"
        )
    if data:
        hints.append(
            "constant data differs (" + ", ".join(sorted(data)) + "): see the strings above; "
            "embedded timestamps (__DATE__/__TIME__ when the build changes SOURCE_DATE_EPOCH), "
            "build paths or random values are the usual causes"
        )
    if debug and not code and not data:
        hints.append(
            "only debug information differs: usually a build path (the source or build folder "
            "without -ffile-prefix-map) or another compiler version"
        )
    elif debug:
        hints.append("debug information differs too (" + ", ".join(sorted(debug)) + ")")
    if ".comment" in base:
        hints.append(".comment differs: another compiler (version) built it")
    if base & {".dynsym", ".dynstr", ".symtab", ".strtab"}:
        hints.append("symbols differ: other functions or names were compiled in")
    if ".note.gnu.build-id" in base:
        hints.append(".note.gnu.build-id is a hash of the rest: it differs whenever anything does")
    return hints


def _printable_strings(data: bytes, min_len: int = 4) -> list[str]:
    out, cur = [], bytearray()
    for byte in data:
        if 32 <= byte < 127:
            cur.append(byte)
            continue
        if len(cur) >= min_len:
            out.append(cur.decode("ascii"))
        cur.clear()
    if len(cur) >= min_len:
        out.append(cur.decode("ascii"))
    return out


def _string_diff(a: bytes, b: bytes) -> tuple[list[str], list[str]]:
    sa, sb = _printable_strings(a), _printable_strings(b)
    set_a, set_b = set(sa), set(sb)
    only_a = [s[:100] for s in dict.fromkeys(sa) if s not in set_b][:STRINGS_SHOWN]
    only_b = [s[:100] for s in dict.fromkeys(sb) if s not in set_a][:STRINGS_SHOWN]
    return only_a, only_b


def _zip_notes(za: zipfile.ZipFile, zb: zipfile.ZipFile) -> list[str]:
    """Archive-level differences: what makes two wheels with the same files differ."""
    notes = []
    order_a = [i.filename for i in za.infolist()]
    order_b = [i.filename for i in zb.infolist()]
    common = [n for n in order_a if n in set(order_b)]
    if common != [n for n in order_b if n in set(order_a)]:
        notes.append("the entries are in another order")
    for attr, label in (
        ("date_time", "entry times"),
        ("external_attr", "file modes"),
        ("compress_type", "compression"),
        ("create_system", "creating system"),
        ("extra", "extra fields"),
    ):
        differ = [n for n in common if getattr(za.getinfo(n), attr) != getattr(zb.getinfo(n), attr)]
        if differ:
            n = differ[0]
            va, vb = getattr(za.getinfo(n), attr), getattr(zb.getinfo(n), attr)
            notes.append(
                f"{label} differ in {len(differ)} entries (e.g. {n}: {va!r} -> {vb!r})"
                + (": SOURCE_DATE_EPOCH differs or was not used" if attr == "date_time" else "")
            )
    if za.comment != zb.comment:
        notes.append("the archive comments differ")
    return notes


# ---------------------------------------------------------------------------- rebuilding


@dataclass
class Rebuilt:
    placed: Path
    wheel: Path  # the rebuilt wheel
    sha256: str
    manifest: Manifest
    report: RunReport
    folder: Path  # the temporary folder the rebuild ran in
    notes: list[str]
    seconds: float


def _seed(cache: Path, into: Path, lock: list[pypi.LockEntry]) -> None:
    """Copy the locked files the user's cache already has (same sha256) into the fresh cache:
    the same bytes, without the network. Nothing else comes along."""
    mine, fresh = Cache(cache), Cache(into)
    for e in lock:
        have, dest = (
            (mine.sdists, fresh.sdists) if e.kind == "sdist" else (mine.wheels, fresh.wheels)
        )
        if (have / e.filename).is_file() and pypi.sha256_of(have / e.filename) == e.sha256:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(have / e.filename, dest / e.filename)


def _build_target(manifest: Manifest) -> Target:
    """The target the wheel was really built on (a pure wheel is built once, for another)."""
    target = manifest.built_target()
    built_on = (manifest.build or {}).get("built_on")
    if built_on and built_on != target.id:
        return resolve_targets([built_on], target.provider)[0]
    return target


def rebuild(
    engine: Engine,
    wheel: Path,
    *,
    cache: Path,
    progress: TargetProgressFn,
    recipes: Path | None = None,
    sdist: Path | None = None,
) -> Rebuilt:
    """Rebuild `wheel` from its manifest in a fresh temporary folder. On a failure the folder
    is kept for its logs; on success `cleanup` removes it once the caller is done."""
    manifest = load_manifest(wheel, NEEDED_TO_REBUILD, "a rebuild", REBUILD_OTHERWISE)
    try:
        lock = pypi.Lock.from_json(json.dumps({"lock_format": 1, "entries": manifest.lock}))
    except ConfigError as exc:
        raise ManifestError(f"{manifest_path(wheel)}: {exc.message}", fix=exc.fix) from exc
    pinned = pypi.Lock(tuple(e for e in lock.entries if e.kind in ("sdist", "build")))
    target = _build_target(manifest)
    folder = Path(tempfile.mkdtemp(prefix="cbuild-verify-"))
    ok = False
    t0 = time.monotonic()
    try:
        recipe, recipes_dir, notes = recipe_from_manifest(manifest, folder, recipes)
        notes += _placed_notes(wheel, manifest)
        spec = target_spec(recipe, target)
        _, inotes = image_for_target(engine, spec, lambda m: progress(target.id, m), manifest)
        notes += inotes
        _seed(cache, folder / "cache", list(lock.entries))
        # The rebuilt wheel's test takes its dependencies where the placed one's did.
        root = wheelhouse_root(wheel, manifest.built_target())
        links = tuple(root / f for f in search_folders(target)) if root else ()
        req = WheelRequest(
            manifest.package,
            manifest.version,
            (target,),
            folder / "wheelhouse",
            folder / "cache",
            recipes_dir,
            sdist=sdist,
            rebuild=True,
            pinned=pinned,
            find_links=links,
        )
        report = Pipeline(engine, progress).run(req)
        r = report.results[0]
        if r.wheel is None:
            raise BuildError(
                f"the rebuild of {wheel.name} failed: {r.status}: {r.reason}\n{r.test_detail}",
                fix=f"its logs are kept in {folder}",
            )
        if not report.ok:
            notes.append(f"the rebuilt wheel did not pass its test ({r.status}); compared anyway")
        notes += _provenance_notes(manifest, r.build_key, r.build_facts, spec.hash)
        ok = True
        return Rebuilt(
            wheel,
            r.wheel,
            r.sha256,
            manifest,
            report,
            folder,
            notes,
            time.monotonic() - t0,
        )
    finally:
        if not ok:
            progress("", f"rebuild folder kept for its logs: {folder}")


def cleanup(rebuilt: Rebuilt, keep: bool = False) -> None:
    if not keep:
        shutil.rmtree(rebuilt.folder, ignore_errors=True)


def _placed_notes(wheel: Path, manifest: Manifest) -> list[str]:
    """Changes to the wheel since it was built: a rebuild gives the wheel as built."""
    notes = []
    if edits := manifest.edits:
        flat = "; ".join(str(c) for change in edits for c in (change or ["?"]))
        notes.append(
            f"the wheel was edited after it was built ({flat}): a rebuild gives the wheel "
            "before those edits"
        )
    if pypi.sha256_of(wheel) != manifest.sha256:
        notes.append(
            f"the wheel is not the one its manifest records (sha256 {manifest.sha256[:16]}): "
            "it was changed after it was placed"
        )
    return notes


def _provenance_notes(
    manifest: Manifest, key: str, facts: dict[str, Any], spec_hash: str
) -> list[str]:
    """Where the rebuild's inputs differ from the recorded ones: the likely causes first."""
    build = manifest.build or {}
    notes = []
    if not build:
        notes.append("the manifest does not record the build (older cbuild): no key to compare")
    elif build.get("key") and build["key"] != key:
        notes.append(
            f"the build key differs from the recorded one ({build['key'][:16]} -> {key[:16]}): "
            "the recipe, the image definition, the pinned inputs or cbuild's build steps "
            f"changed since (steps version {build.get('steps_version')} recorded)"
        )
    if manifest.image_spec_hash and manifest.image_spec_hash != spec_hash:
        notes.append(
            f"the image definition differs: recorded {manifest.image_spec_hash}, now {spec_hash}"
        )
    for k in ("gcc", "gxx", "gfortran", "ld", "python", "glibc"):
        if k in build and k in facts and build[k] != facts[k]:
            notes.append(f"{k} differs: recorded {build[k]!r}, the rebuild used {facts[k]!r}")
    return notes


# ---------------------------------------------------------------------------- finding wheels


def find_placed(wheelhouse: Path, package: str, version: str, target_id: str) -> Path:
    """The wheel of PACKAGE VERSION that `cbuild wheel` placed for TARGET (by its manifest)."""
    target = resolve_targets([target_id])[0]
    name = canonicalize_name(package)
    try:
        want = Version(version)
    except InvalidVersion as exc:
        raise ConfigError(f"{version!r} is not a version: {exc}") from exc
    others = []
    # pip's folders first, then the stack's other folders (a wheel placed for the target
    # lies in one of them).
    for folder in dict.fromkeys([*search_folders(target), *stack_folders(target.stack)]):
        for whl in sorted(wheelhouse / folder / n for n in wheel_names(wheelhouse / folder)):
            try:
                wname, wver, _, _ = parse_wheel_filename(whl.name)
            except (ValueError, InvalidVersion):
                continue
            if wname != name or Version(wver.public) != want:
                continue
            try:
                tid = Manifest.load(manifest_path(whl)).target_id
            except ManifestError:
                tid = None
            if tid == target_id:
                return whl
            others.append(f"{folder}/{whl.name} ({'target ' + tid if tid else 'no manifest'})")
    there = "; there: " + ", ".join(others) if others else ""
    raise ConfigError(
        f"no wheel of {package} {version} built for {target_id} in {wheelhouse}{there}",
        fix=f"build it with `cbuild wheel {package} {version} --target {target_id} "
        f"--wheelhouse {wheelhouse}`, or pass the wheel file: `cbuild verify WHEEL`",
    )


__all__ = [
    "Comparison",
    "MemberDiff",
    "Rebuilt",
    "SectionDiff",
    "cleanup",
    "compare_member",
    "compare_wheels",
    "elf_hints",
    "find_placed",
    "rebuild",
]
