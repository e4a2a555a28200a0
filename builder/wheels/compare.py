"""Two wheels compared member by member, for `cbuild verify` and `cbuild rebuild`: which files
differ and how (a unified diff for text, the sections for ELF files, with the printable strings
only one side has), and the archive-level differences (entry times, modes, order, compression)."""

from __future__ import annotations

import difflib
import hashlib
import io
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from builder.errors import ConfigError
from builder.wheels import info, repair

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


def check_wheel(wheel: Path) -> None:
    """A readable wheel: a zip whose members all stay inside it (inspect's checks)."""
    if wheel.suffix != ".whl" and wheel.is_file():
        raise ConfigError(f"{wheel} is not a wheel (no .whl suffix)", fix="pass a .whl file")
    info._open_zip(wheel).close()


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
