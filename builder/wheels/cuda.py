"""A static scan of the GPU code an ELF file carries, the GPU twin of `isascan`: the SASS
architectures (sm_XY) and PTX (compute_XY) in its `.nv_fatbin` section, and the check that a
CUDA target's wheel carries what the target promises.

nvcc embeds device code as fatbin containers, one per translation unit, in `.nv_fatbin`
(relocatable device code for a later device link in `__nv_relfatbin`). A container is a 16-byte
header (magic 0xBA55ED50, version, header size, payload size) and entries, each with its own
header: kind (PTX, ELF i.e. SASS), architecture, flags (compression, debug, arch- or
family-specific). Listing needs the headers only: nothing is decompressed. `cuobjdump
--list-elf --list-ptx` lists the same (tests cross-check); it names a family cubin `sm_100`
where this scan says `sm_100f`.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from builder.targets.gpu import GpuArchs
from builder.wheels.isascan import ELF_MAGIC, ElfScanError

FATBIN_MAGIC = 0xBA55ED50
FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
_CONTAINER = struct.Struct("<IHHQ")  # magic, version, header size, payload size
_ENTRY = struct.Struct("<HHIQIIHHI")  # kind, version, header size, payload size,
# compressed size, (unknown), minor, major, arch; then name offset/length, flags (unused here)
_FLAGS = struct.Struct("<Q")
_FLAGS_AT = 40
_KINDS = {1: "ptx", 2: "sass", 4: "sass"}  # 4: the pre-ELF cubin format
_DEBUG = 0x2
_COMPRESSION = ((0x8000, "zstd"), (0x2000, "lz4"), (0x1000, "lz"))
_ARCH_SPECIFIC = 0x100000  # sm_90a
_FAMILY_SPECIFIC = 0x200000  # sm_100f


class FatbinError(ElfScanError):
    """A `.nv_fatbin` whose headers do not add up (truncated or not a fatbin)."""


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "sass" | "ptx"
    arch: str  # "80", "90a", "100f"
    size: int  # payload bytes as stored
    compression: str | None  # None, "zstd", "lz4", "lz"
    debug: bool  # built with -G (device debug)
    ptx_version: str | None  # PTX ISA of a PTX entry, e.g. "9.0"

    @property
    def name(self) -> str:
        return f"sm_{self.arch}" if self.kind == "sass" else f"compute_{self.arch}"


def _arch_order(arch: str) -> tuple[int, str]:
    digits = arch.rstrip("af")
    return int(digits), arch[len(digits) :]


@dataclass(frozen=True)
class DeviceCode:
    """One ELF file's device code: SASS and PTX names, each once, ascending."""

    path: str
    sass: tuple[str, ...]  # ("sm_80", "sm_90")
    ptx: tuple[str, ...]  # ("compute_90",)
    entries: tuple[FatbinEntry, ...]  # every entry, in file order (one per translation unit)
    debug: bool  # some entry was built with -G

    @property
    def has_device_code(self) -> bool:
        return bool(self.entries)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["has_device_code"] = self.has_device_code
        return d


def parse_fatbin(data: bytes, name: str = "fatbin") -> tuple[FatbinEntry, ...]:
    """Every entry of the fatbin containers in `data` (a `.nv_fatbin` section, or a `.fatbin`
    file), in order. Containers are 8-byte aligned: zero padding between them is skipped."""
    entries: list[FatbinEntry] = []
    off = 0
    while off + _CONTAINER.size <= len(data):
        magic, _version, hsize, fsize = _CONTAINER.unpack_from(data, off)
        if magic != FATBIN_MAGIC:
            if data[off : off + 8].strip(b"\0"):
                raise FatbinError(f"{name}: no fatbin container at offset {off:#x}")
            off += 8
            continue
        end = off + hsize + fsize
        if hsize < _CONTAINER.size or end > len(data):
            raise FatbinError(f"{name}: fatbin container at {off:#x} runs past the end")
        p = off + hsize
        while p < end:
            if p + _FLAGS_AT + _FLAGS.size > end:
                raise FatbinError(f"{name}: truncated fatbin entry at {p:#x}")
            kind, _v, ehsize, size, _csize, _u, minor, major, arch = _ENTRY.unpack_from(data, p)
            (flags,) = _FLAGS.unpack_from(data, p + _FLAGS_AT)
            if ehsize < _FLAGS_AT + _FLAGS.size or p + ehsize + size > end:
                raise FatbinError(f"{name}: fatbin entry at {p:#x} runs past its container")
            if kind in _KINDS:
                suffix = "a" if flags & _ARCH_SPECIFIC else "f" if flags & _FAMILY_SPECIFIC else ""
                entries.append(
                    FatbinEntry(
                        kind=_KINDS[kind],
                        arch=f"{arch}{suffix}",
                        size=size,
                        compression=next((n for bit, n in _COMPRESSION if flags & bit), None),
                        debug=bool(flags & _DEBUG),
                        ptx_version=f"{major}.{minor}" if kind == 1 else None,
                    )
                )
            p += ehsize + size
        off = end
    return tuple(entries)


def _device_code(name: str, entries: Iterable[FatbinEntry]) -> DeviceCode:
    entries = tuple(entries)

    def names(kind: str) -> tuple[str, ...]:
        archs = sorted({e.arch for e in entries if e.kind == kind}, key=_arch_order)
        return tuple(("sm_" if kind == "sass" else "compute_") + a for a in archs)

    return DeviceCode(
        path=name,
        sass=names("sass"),
        ptx=names("ptx"),
        entries=entries,
        debug=any(e.debug for e in entries),
    )


def scan_device_code(path: Path | str) -> DeviceCode:
    """Scan one ELF file (or a bare `.fatbin`) from disk."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return scan_device_stream(f, str(p))
    except FileNotFoundError as exc:
        raise ElfScanError(f"no such file: {p}") from exc
    except IsADirectoryError as exc:
        raise ElfScanError(f"{p} is a directory, not an ELF file") from exc


def scan_device_stream(stream: BinaryIO, name: str) -> DeviceCode:
    """Scan an ELF file (or a bare fatbin) from a seekable binary stream."""
    head = stream.read(4)
    stream.seek(0)
    if head == _CONTAINER.pack(FATBIN_MAGIC, 0, 0, 0)[:4]:
        return _device_code(name, parse_fatbin(stream.read(), name))
    if head != ELF_MAGIC:
        raise ElfScanError(
            f"{name} is not an ELF file (starts with {head!r})",
            fix="pass a shared library, extension module or executable",
        )
    try:
        elf = ELFFile(stream)
        sections = [elf.get_section_by_name(s) for s in FATBIN_SECTIONS]
        entries: list[FatbinEntry] = []
        for sec in sections:
            if sec is not None and sec["sh_type"] != "SHT_NOBITS":
                entries += parse_fatbin(sec.data(), f"{name}:{sec.name}")
    except ELFError as exc:
        raise ElfScanError(
            f"{name}: unreadable ELF file ({exc})", fix="the file is truncated or corrupt"
        ) from exc
    return _device_code(name, entries)


def scan_wheel_device_code(path: Path | str) -> tuple[DeviceCode, ...]:
    """Every ELF member (and bare `.fatbin`) of a wheel, in archive order."""
    out = []
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
        for info in zf.infolist():
            if info.is_dir():
                continue
            with zf.open(info) as f:
                head = f.read(4)
            if head != ELF_MAGIC and head != struct.pack("<I", FATBIN_MAGIC):
                continue
            # A temporary file, not memory: GPU libraries reach gigabytes.
            dest = Path(tmp) / "member"
            with zf.open(info) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            try:
                with open(dest, "rb") as f:
                    out.append(scan_device_stream(f, info.filename))
            finally:
                dest.unlink(missing_ok=True)
    return tuple(out)


def _carries_sass(have: tuple[str, ...], arch: str) -> bool:
    """sm_90 is carried by sm_90 and by its arch- or family-specific forms (sm_90a, sm_90f),
    which run on a 9.0 GPU too. PTX is matched exactly: compute_90a is no forward path."""
    forms = (arch,) if arch[-1] in "af" else (arch, f"{arch}a", f"{arch}f")
    return any(f"sm_{f}" in have for f in forms)


def check_device_code(codes: Iterable[DeviceCode], promised: GpuArchs) -> tuple[str, ...]:
    """What a CUDA build lacks against the architectures it promised; empty when nothing.
    Every file that carries device code must carry every promised SASS and PTX; files with
    none are host code (fine) unless no file has any: then the build fell back to CPU."""
    codes = tuple(codes)
    with_code = [c for c in codes if c.has_device_code]
    if not with_code:
        where = "no ELF file" if not codes else f"none of its {len(codes)} ELF file(s)"
        return (
            f"carries no device code at all ({where} has a .nv_fatbin): the build fell back "
            f"to CPU, or its CUDA code was not compiled; promised {promised.describe()}",
        )
    problems = []
    for c in with_code:
        lacks = [f"sm_{a}" for a in promised.sass if not _carries_sass(c.sass, a)]
        lacks += [f"compute_{a} (PTX)" for a in promised.ptx if f"compute_{a}" not in c.ptx]
        if lacks:
            has = ", ".join((*c.sass, *c.ptx))
            problems.append(f"{c.path} lacks {', '.join(lacks)} (it carries {has})")
    return tuple(problems)
