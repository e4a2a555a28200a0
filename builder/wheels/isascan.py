"""A static scan of an ELF file: the x86 instruction-set extensions its code contains, and the
facts the dynamic loader checks (needed libraries, RPATH/RUNPATH, symbol versions, ISA note).

What the scan finds is what the code *contains*. Runtime-dispatching libraries (numpy, OpenBLAS)
contain AVX-512 paths they only take on CPUs that have it, so "contains x86-64-v4 instructions"
does not mean "requires x86-64-v4": only a run under a lower CPU model decides that.

Decoding is a linear sweep of every executable section: data embedded in code (rare in compiled
C/C++, common in hand-written assembly) decodes as whatever instructions its bytes spell.
"""

from __future__ import annotations

import operator
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import archspec.cpu
from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from elftools.elf.sections import NoteSection
from iced_x86 import Code, CpuidFeature, Decoder, EncodingKind, Instruction

from builder.errors import CbuildError
from builder.targets.levels import level

ELF_MAGIC = b"\x7fELF"
BASELINE = "x86-64"
OUTSIDE = "outside the levels"

_FEATURE_NAMES: dict[int, str] = {
    v: k for k, v in vars(CpuidFeature).items() if not k.startswith("_") and isinstance(v, int)
}
# archspec spells a few features differently from iced (Linux /proc/cpuinfo names).
_ARCHSPEC_NAME = {"CMPXCHG16B": "cx16", "LZCNT": "abm"}
# The x86-64 baseline of the psABI. archspec's `x86_64` has an empty feature set (it is the
# family, not a level), so the baseline is spelled out here; it wins over archspec listing
# mmx/sse/sse2 under x86-64-v2. The rest are instructions every x86-64 CPU has.
_BASELINE_FEATURES = frozenset(
    {
        "INTEL8086",
        "INTEL186",
        "INTEL286",
        "INTEL386",
        "INTEL486",
        "X64",
        "CPUID",
        "TSC",
        "CX8",
        "CMOV",
        "FPU",
        "FPU287",
        "FPU387",
        "MMX",
        "SSE",
        "SSE2",
        "FXSR",
        "SYSCALL",
        "SEP",
        "PAUSE",
        "MULTIBYTENOP",
        "CLFSH",
    }
)
# CET instructions encoded in the reserved-NOP space: CPUs without CET execute them as NOPs
# (GCC's -fcf-protection puts endbr64 at every function entry).
_NOP_HINTS = frozenset(
    getattr(Code, n) for n in ("ENDBR64", "ENDBR32", "RDSSPD_R32", "RDSSPQ_R64") if hasattr(Code, n)
)
# In 64-bit mode LAHF/SAHF need CPUID's LAHF-SAHF bit (x86-64-v2); iced files them as 8086.
_LAHF_SAHF = frozenset({Code.LAHF, Code.SAHF})
# iced lists only an instruction's own extension (vpdpbusd zmm: AVX512_VNNI), but its encoding
# alone needs more: no CPU decodes EVEX without AVX512F, nor VEX without AVX.
_ENCODING_NEEDS = {EncodingKind.VEX: "AVX", EncodingKind.EVEX: "AVX512F"}
_INVALID = Code.INVALID
_CODE = operator.attrgetter("code")
# GNU property note: GNU_PROPERTY_X86_ISA_1_* bitmask, bit i = level i of the chain.
_ISA_NEEDED = ("GNU_PROPERTY_X86_ISA_1_NEEDED", 0xC0008002)
_ISA_USED = ("GNU_PROPERTY_X86_ISA_1_USED", 0xC0010002)
_SYMVER = re.compile(r"^([A-Z][A-Z0-9]*)_(\d+(?:\.\d+)*)$")


class ElfScanError(CbuildError):
    """A file that is not an ELF object, or one pyelftools cannot read."""

    exit_code = 2


@cache
def level_chain() -> tuple[str, ...]:
    """`x86-64`, then the `x86-64-vN` levels archspec knows, ascending: a new level in archspec
    is picked up as data."""
    found = [n for n in archspec.cpu.TARGETS if re.fullmatch(r"x86_64_v\d+", n)]
    ordered = sorted(found, key=lambda n: int(n.rsplit("v", 1)[1]))
    return (BASELINE, *(level(n).name for n in ordered))


def level_index(name: str) -> int:
    return level_chain().index(name)


@cache
def _feature_level(feature: str) -> int | None:
    """The lowest level (index into `level_chain`) that has this CPUID feature; None when no
    level has it (AES, SHA, ADX, AVX512_VNNI, AMX, ...)."""
    if feature in _BASELINE_FEATURES:
        return 0
    spelled = _ARCHSPEC_NAME.get(feature, feature.lower())
    for i, name in enumerate(level_chain()[1:], start=1):
        if spelled in level(name).features:
            return i
    return None


@dataclass(frozen=True)
class _CodeInfo:
    features: tuple[str, ...]
    level: int  # the highest level any of its features needs
    outside: tuple[str, ...]  # its features that no level has


_code_cache: dict[int, _CodeInfo] = {}


def _code_info(code: int) -> _CodeInfo:
    # iced's CPUID features are a function of the Code alone, so one lookup per distinct Code
    # (a few hundred in a large library) replaces one per instruction.
    info = _code_cache.get(code)
    if info is not None:
        return info
    instr = Instruction.create(code)
    if code in _LAHF_SAHF:
        features: tuple[str, ...] = ("LAHF_LM",)
    else:
        features = tuple(_FEATURE_NAMES[f] for f in instr.cpuid_features())
    # Reported under their own feature names, but they run (as NOPs) on every CPU.
    levels = {f: 0 if code in _NOP_HINTS else _feature_level(f) for f in features}
    known = [lv for lv in levels.values() if lv is not None]
    implied = _ENCODING_NEEDS.get(instr.encoding)
    if implied:
        known.append(_feature_level(implied) or 0)
    info = _CodeInfo(
        features=features,
        level=max(known, default=0),
        outside=tuple(f for f, lv in levels.items() if lv is None),
    )
    _code_cache[code] = info
    return info


@dataclass(frozen=True)
class ElfIsa:
    """One ELF file: its loader facts and, for x86 code, what its instructions need."""

    path: str
    machine: str  # e.g. "EM_X86_64"
    scanned: bool  # False: not x86 code, nothing decoded
    sections: tuple[str, ...]  # the executable sections decoded
    code_bytes: int
    instructions: int
    invalid: int  # byte runs that decode to no instruction (data in code, or padding)
    features: dict[str, int]  # CPUID feature -> instructions that need it
    per_level: dict[str, int]  # level -> instructions whose highest need is this level
    above: dict[str, int]  # level -> instructions that need a higher level
    outside_levels: dict[str, int]  # features no x86-64 level has -> instructions
    highest_level: str | None  # the highest level whose instructions appear; None: no code
    needed: tuple[str, ...]
    soname: str | None
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    symbol_versions: dict[str, str]  # e.g. {"GLIBC": "2.34", "GLIBCXX": "3.4.29"}: max needed
    isa_needed: str | None  # the GNU property note's "x86 ISA needed", if recorded
    isa_used: str | None
    seconds: float = field(compare=False)

    @property
    def glibc(self) -> str | None:
        return self.symbol_versions.get("GLIBC")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["glibc"] = self.glibc
        return d


def scan_elf(path: Path | str) -> ElfIsa:
    """Scan one ELF file from disk."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return scan_stream(f, str(p))
    except FileNotFoundError as exc:
        raise ElfScanError(f"no such file: {p}") from exc
    except IsADirectoryError as exc:
        raise ElfScanError(f"{p} is a directory, not an ELF file") from exc


def scan_stream(stream: BinaryIO, name: str) -> ElfIsa:
    """Scan an ELF file from a seekable binary stream; `name` is what the report calls it."""
    t0 = time.perf_counter()
    head = stream.read(4)
    stream.seek(0)
    if head != ELF_MAGIC:
        raise ElfScanError(
            f"{name} is not an ELF file (starts with {head!r})",
            fix="pass a shared library, extension module or executable",
        )
    try:
        elf = ELFFile(stream)
        machine = str(elf["e_machine"])
        bitness = {"EM_X86_64": 64, "EM_386": 32}.get(machine)
        counts: Counter[int] = Counter()
        sections: list[str] = []
        code_bytes = 0
        if bitness is not None:
            for sec_name, addr, data in _code_regions(elf):
                sections.append(sec_name)
                code_bytes += len(data)
                # One pass; the per-instruction work stays in C (map, attrgetter, Counter):
                # measured faster than a Python loop reusing one Instruction with decode_out.
                counts.update(map(_CODE, Decoder(bitness, data, ip=addr)))
        dyn = _dynamic(elf)
        versions = _symbol_versions(elf)
        isa_needed, isa_used = _isa_note(elf)
    except ELFError as exc:
        raise ElfScanError(
            f"{name}: unreadable ELF file ({exc})", fix="the file is truncated or corrupt"
        ) from exc

    chain = level_chain()
    invalid = counts.pop(_INVALID, 0)
    features: Counter[str] = Counter()
    per_level = [0] * len(chain)
    outside: Counter[str] = Counter()
    for code, n in counts.items():
        info = _code_info(code)
        per_level[info.level] += n
        for f in info.features:
            features[f] += n
        for f in info.outside:
            outside[f] += n
    present = [i for i, n in enumerate(per_level) if n]
    return ElfIsa(
        path=name,
        machine=machine,
        scanned=bitness is not None,
        sections=tuple(sections),
        code_bytes=code_bytes,
        instructions=sum(counts.values()),
        invalid=invalid,
        features=dict(features.most_common()),
        per_level=dict(zip(chain, per_level, strict=True)),
        above={lv: sum(per_level[i + 1 :]) for i, lv in enumerate(chain)},
        outside_levels=dict(outside.most_common()),
        highest_level=chain[max(present)] if present else None,
        needed=tuple(dyn["needed"]),
        soname=dyn["soname"][0] if dyn["soname"] else None,
        rpath=tuple(dyn["rpath"]),
        runpath=tuple(dyn["runpath"]),
        symbol_versions=versions,
        isa_needed=isa_needed,
        isa_used=isa_used,
        seconds=time.perf_counter() - t0,
    )


def _code_regions(elf: ELFFile) -> list[tuple[str, int, bytes]]:
    regions = [
        (sec.name, sec["sh_addr"], sec.data())
        for sec in elf.iter_sections()
        if sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and sec["sh_type"] != "SHT_NOBITS"
    ]
    if elf.num_sections() == 0:
        # Section headers stripped (sstrip): the executable load segments hold the same code.
        regions = [
            (f"PT_LOAD@{seg['p_vaddr']:#x}", seg["p_vaddr"], seg.data())
            for seg in elf.iter_segments()
            if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 1  # PF_X
        ]
    return regions


def _dynamic(elf: ELFFile) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"needed": [], "soname": [], "rpath": [], "runpath": []}
    for sec in elf.iter_sections():
        if not isinstance(sec, DynamicSection):
            continue
        for tag in sec.iter_tags():
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                out["needed"].append(tag.needed)
            elif kind == "DT_SONAME":
                out["soname"].append(tag.soname)
            elif kind == "DT_RPATH":
                out["rpath"] += tag.rpath.split(":")
            elif kind == "DT_RUNPATH":
                out["runpath"] += tag.runpath.split(":")
    return out


def _symbol_versions(elf: ELFFile) -> dict[str, str]:
    """The highest version needed of each versioned family (GLIBC_2.34 -> {"GLIBC": "2.34"})."""
    best: dict[str, tuple[int, ...]] = {}
    for sec in elf.iter_sections():
        if not isinstance(sec, GNUVerNeedSection):
            continue
        for _lib, auxes in sec.iter_versions():
            for aux in auxes:
                m = _SYMVER.match(aux.name)  # GLIBC_PRIVATE and the like carry no version
                if m:
                    v = tuple(int(x) for x in m.group(2).split("."))
                    best[m.group(1)] = max(best.get(m.group(1), v), v)
    return {k: ".".join(map(str, v)) for k, v in sorted(best.items())}


def _isa_note(elf: ELFFile) -> tuple[str | None, str | None]:
    needed = used = None
    for sec in elf.iter_sections():
        if not isinstance(sec, NoteSection):
            continue
        for note in sec.iter_notes():
            if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                continue
            for prop in note["n_desc"]:
                if prop["pr_type"] in _ISA_NEEDED:
                    needed = _isa_bits(prop["pr_data"])
                elif prop["pr_type"] in _ISA_USED:
                    used = _isa_bits(prop["pr_data"])
    return needed, used


def _isa_bits(mask: int) -> str | None:
    chain = level_chain()
    bits = [i for i in range(len(chain)) if mask >> i & 1]
    return chain[max(bits)] if bits else None


# ---------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class MemberScan:
    """One ELF member of a wheel: its scan, or why it could not be read."""

    member: str
    size: int
    isa: ElfIsa | None
    error: str | None = None


@dataclass(frozen=True)
class WheelIsa:
    """A wheel's ELF members scanned, and the figures of all of them together: the data that
    placement decides from (`wheelhouse.placement.IsaFigures`)."""

    members: tuple[MemberScan, ...]

    @property
    def _x86(self) -> list[ElfIsa]:
        return [m.isa for m in self.members if m.isa is not None and m.isa.scanned]

    @property
    def highest_level(self) -> str | None:
        found = [level_index(i.highest_level) for i in self._x86 if i.highest_level]
        return level_chain()[max(found)] if found else None

    @property
    def instructions(self) -> int:
        return sum(i.instructions for i in self._x86)

    @property
    def above(self) -> dict[str, int]:
        """Level -> instructions above it, all ELF members together."""
        return {lv: sum(i.above.get(lv, 0) for i in self._x86) for lv in level_chain()}

    @property
    def outside_levels(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for i in self._x86:
            out.update(i.outside_levels)
        return dict(out)

    @property
    def library_paths(self) -> tuple[str, ...]:
        """Every RPATH and RUNPATH entry of every member, once each."""
        paths = (p for m in self.members if m.isa for p in (*m.isa.rpath, *m.isa.runpath))
        return tuple(dict.fromkeys(paths))


def scan_members(zf: zipfile.ZipFile) -> WheelIsa:
    """Scan every ELF member of an open wheel, through a temporary file: extension modules
    reach hundreds of MB (torch), and pyelftools wants a seekable stream."""
    found: list[MemberScan] = []
    with tempfile.TemporaryDirectory(prefix="cbuild-scan-") as tmp:
        dest = Path(tmp) / "member"
        for info in sorted(zf.infolist(), key=operator.attrgetter("filename")):
            if info.is_dir():
                continue
            with zf.open(info) as f:
                if f.read(4) != ELF_MAGIC:
                    continue
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            try:
                with open(dest, "rb") as f:
                    isa = scan_stream(f, info.filename)
                found.append(MemberScan(info.filename, info.file_size, isa))
            except ElfScanError as exc:
                found.append(MemberScan(info.filename, info.file_size, None, exc.message))
    return WheelIsa(tuple(found))


def scan_wheel(path: Path | str) -> WheelIsa:
    """`scan_members` of the wheel file at `path`."""
    try:
        with zipfile.ZipFile(path) as zf:
            return scan_members(zf)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ElfScanError(f"{path}: not a readable wheel ({exc})") from exc


# ---------------------------------------------------------------------------- benchmark


def bench_scan(path: Path | str) -> dict[str, Any]:
    """Throughput of `scan_elf` on one file (MB = 10^6 bytes of executable code), wall time
    of the whole scan including reading the file."""
    t0 = time.perf_counter()
    isa = scan_elf(path)
    seconds = time.perf_counter() - t0
    return {
        "file": str(path),
        "file_bytes": Path(path).stat().st_size,
        "bytes": isa.code_bytes,
        "instructions": isa.instructions,
        "seconds": round(seconds, 3),
        "mb_per_s": round(isa.code_bytes / seconds / 1e6, 2),
        "highest_level": isa.highest_level,
    }


_BENCH_C = r"""
#include <stddef.h>
#include <string.h>
double dot(const double *a, const double *b, size_t n)
{ double s = 0; for (size_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }
void saxpy(float *y, const float *x, float a, size_t n)
{ for (size_t i = 0; i < n; i++) y[i] += a * x[i]; }
unsigned hash(const char *s)
{ unsigned h = 2166136261u; while (*s) h = (h ^ (unsigned char)*s++) * 16777619u; return h; }
int branchy(int x, int y)
{ for (int i = 0; i < y; i++) { if (x & 1) x = 3 * x + 1; else x >>= 1; if (x == 1) break; }
  return x; }
size_t count_bits(const unsigned long *w, size_t n)
{ size_t c = 0; for (size_t i = 0; i < n; i++) c += __builtin_popcountl(w[i]); return c; }
void copy_rev(char *d, const char *s, size_t n) { for (size_t i = 0; i < n; i++) d[i] = s[n-1-i]; }
int cmp(const char *a, const char *b) { return strcmp(a, b) + (int)strlen(a); }
"""


def make_bench_elf(dest: Path, megabytes: int = 100, march: str = "x86-64-v3") -> Path:
    """A shared object with `megabytes` MB of real compiled code in one executable section:
    the `.text` of a small C file compiled by the host gcc, repeated whole (so that every copy
    starts on an instruction boundary) and linked as code. Needs gcc and binutils."""
    for tool in ("gcc", "objcopy"):
        if shutil.which(tool) is None:
            raise CbuildError(f"{tool} not found", fix="install gcc and binutils")
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "k.c").write_text(_BENCH_C)

        def run(*cmd: str) -> None:
            subprocess.run(cmd, cwd=t, check=True, capture_output=True)

        run("gcc", "-c", "-O2", "-fPIC", f"-march={march}", "k.c", "-o", "k.o")
        run("objcopy", "-O", "binary", "--only-section=.text", "k.o", "text.bin")
        text = (t / "text.bin").read_bytes()
        copies = max(1, megabytes * 1_000_000 // len(text))
        with open(t / "blob.bin", "wb") as f:
            for _ in range(copies):
                f.write(text)
        run(
            "objcopy",
            "-I",
            "binary",
            "-O",
            "elf64-x86-64",
            "-B",
            "i386:x86-64",
            "--rename-section",
            ".data=.text,alloc,load,readonly,code,contents",
            "blob.bin",
            "blob.o",
        )
        run("gcc", "-shared", "-nostdlib", "blob.o", "-o", str(dest.resolve()))
    return dest
