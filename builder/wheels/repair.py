"""Wheel repair, auditwheel-style: reading functions return data, `repair_wheel` writes.

A repaired wheel satisfies the site rules (DESIGN.md): local version label, `linux_*` platform
tags, a platform tag on an "any" wheel that ships shared libraries, no `nvidia-*` requirements,
a valid RECORD, and a deterministic zip so that two builds can be compared byte for byte.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import stat
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import BuildError
from builder.files import temp_beside
from builder.wheels.members import REFUSE_FIX, escaping_member
from builder.wheels.rpath import ElfEdits

# 1980-01-01: the earliest time a zip entry can carry.
_ZIP_EPOCH = 315532800
# Fixed so that the same input gives the same bytes (with the same zlib).
_COMPRESSLEVEL = 6
_CHUNK = 1 << 20
_SHARED_LIB = re.compile(r"\.so(\.\d+)*$")
_CPYTHON = re.compile(r"cpython-(3)(\d+)")
_MANYLINUX = re.compile(r"^(?:manylinux|musllinux)(?:1|2010|2014|_\d+_\d+)_(?P<arch>.+)$")
_ELF_MAGIC = b"\x7fELF"
# e_machine -> platform suffix; a header too short to say (a test's stub) counts as x86-64.
_ELF_MACHINES = {None: "x86_64", 3: "i686", 62: "x86_64", 183: "aarch64"}
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class RepairError(BuildError):
    """A wheel the site rules cannot be applied to (malformed, or ambiguous tags)."""


@dataclass(frozen=True)
class RepairResult:
    path: Path
    name: str  # canonical distribution name
    version: str
    tags: tuple[str, ...]  # expanded, e.g. ("cp311-cp311-linux_x86_64",)
    changes: list[str] = field(hash=False, compare=False)
    is_pure: bool
    has_shared_libs: bool


# ---------------------------------------------------------------------------- pure helpers


def local_version(version: str, label: str, tags: tuple[str, ...] = ()) -> str:
    """`1.85` -> `1.85+computecanada`; tags go before the label (`1.85+torch27.computecanada`);
    an existing local part is kept in front (`1.0+abc.computecanada`). Idempotent."""
    try:
        v = Version(version)
        # Parsing the label and tags as a local part validates and normalizes them.
        suffix = Version(f"0+{'.'.join((*tags, label))}").local or ""
    except InvalidVersion as exc:
        raise RepairError(
            f"cannot label version {version!r} with {label!r} and tags {tags!r}: {exc}",
            fix="versions follow PEP 440; labels and tags are letters, digits and dots",
        ) from exc
    *norm_tags, norm_label = suffix.split(".")
    existing = v.local.split(".") if v.local else []
    if existing and existing[-1] == norm_label:
        return str(v)
    # A tag the upstream version already carries (e.g. `+cu121`) is not repeated.
    parts = [*existing, *(t for t in norm_tags if t not in existing), norm_label]
    return f"{v.public}+{'.'.join(parts)}"


def _platform_tag(plat: str) -> str:
    m = _MANYLINUX.match(plat)
    return f"linux_{m.group('arch')}" if m else plat


def _is_shared_lib(name: str) -> bool:
    return bool(_SHARED_LIB.search(name))


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _split_headers(text: str) -> tuple[list[list[str]], str]:
    """RFC 822-style header fields (each a list of its raw lines, continuations included) and
    the body. Editing raw lines keeps every byte we do not mean to change."""
    lines = text.splitlines(keepends=True)
    fields: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.strip() == "":
            return fields, "".join(lines[i:])
        if line[0] in " \t" and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields, ""


def _field_key(raw: list[str]) -> str:
    return raw[0].split(":", 1)[0].strip().lower()


def _field_value(raw: list[str]) -> str:
    first = raw[0].split(":", 1)[1] if ":" in raw[0] else ""
    return " ".join(part.strip() for part in [first, *raw[1:]]).strip()


def _eol(line: str) -> str:
    return line[len(line.rstrip("\r\n")) :] or "\n"


def _requirement_name(value: str) -> str | None:
    try:
        return canonicalize_name(Requirement(value).name)
    except InvalidRequirement:
        m = _REQ_NAME.match(value)
        return canonicalize_name(m.group(1)) if m else None


def _edit_metadata(text: str, version: str, remove: tuple[str, ...]) -> tuple[str, list[str]]:
    fields, body = _split_headers(text)
    patterns = [p.lower() for p in remove]
    out: list[list[str]] = []
    changes: list[str] = []
    seen_version = False
    for raw in fields:
        key = _field_key(raw)
        if key == "version":
            seen_version = True
            old = _field_value(raw)
            if old != version:
                raw = [f"Version: {version}{_eol(raw[-1])}"]
                changes.append(f"METADATA Version: {old} -> {version}")
        elif key == "requires-dist":
            value = _field_value(raw)
            name = _requirement_name(value)
            if name and any(fnmatchcase(name, p) for p in patterns):
                changes.append(f"removed Requires-Dist: {value}")
                continue
        out.append(raw)
    if not seen_version:
        raise RepairError("METADATA has no Version field", fix="rebuild the wheel")
    return "".join(line for raw in out for line in raw) + body, changes


def _edit_wheel_file(text: str, tags: list[str], purelib: bool | None) -> tuple[str, list[str]]:
    """Set `Tag:` lines (in place of the first old one) and, when asked, `Root-Is-Purelib`."""
    fields, body = _split_headers(text)
    old_tags = [_field_value(raw) for raw in fields if _field_key(raw) == "tag"]
    eol = _eol(fields[0][-1]) if fields else "\n"
    out: list[list[str]] = []
    changes: list[str] = []
    placed_tags = False
    for raw in fields:
        key = _field_key(raw)
        if key == "tag":
            if not placed_tags:
                out += [[f"Tag: {t}{eol}"] for t in tags]
                placed_tags = True
            continue
        if key == "root-is-purelib" and purelib is not None:
            old = _field_value(raw)
            new = "true" if purelib else "false"
            if old.lower() != new:
                raw = [f"Root-Is-Purelib: {new}{_eol(raw[-1])}"]
                changes.append(f"WHEEL Root-Is-Purelib: {old} -> {new}")
        out.append(raw)
    if not placed_tags:
        out += [[f"Tag: {t}{eol}"] for t in tags]
    if purelib is not None and not any(_field_key(raw) == "root-is-purelib" for raw in fields):
        new = "true" if purelib else "false"
        out.insert(0, [f"Root-Is-Purelib: {new}{eol}"])
        changes.append(f"WHEEL Root-Is-Purelib: (none) -> {new}")
    if old_tags != tags:
        changes.append(f"WHEEL Tag: {', '.join(old_tags) or '(none)'} -> {', '.join(tags)}")
    return "".join(line for raw in out for line in raw) + body, changes


def _expand(py: str, abi: str, plat: str) -> list[str]:
    return [f"{x}-{y}-{z}" for x in py.split(".") for y in abi.split(".") for z in plat.split(".")]


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class _WheelName:
    dist: str  # the name part exactly as the file spells it
    version: str
    build: str | None
    py: str
    abi: str
    plat: str

    @classmethod
    def parse(cls, filename: str) -> _WheelName:
        try:
            parse_wheel_filename(filename)
        except InvalidWheelFilename as exc:
            raise RepairError(f"not a wheel file name: {filename!r} ({exc})") from exc
        parts = filename[: -len(".whl")].split("-")
        build = parts[2] if len(parts) == 6 else None
        return cls(parts[0], parts[1], build, *parts[-3:])

    def __str__(self) -> str:
        build = f"-{self.build}" if self.build else ""
        return f"{self.dist}-{self.version}{build}-{self.py}-{self.abi}-{self.plat}.whl"


def _dist_info_dir(names: Iterable[str]) -> str:
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    infos = sorted(t for t in tops if t.endswith(".dist-info"))
    if len(infos) != 1:
        raise RepairError(
            f"expected one top-level .dist-info directory, found {infos or 'none'}",
            fix="rebuild the wheel with a standard build backend",
        )
    return infos[0]


def _zip_order(name: str, dist_info: str) -> tuple[bool, bool, str]:
    # Like `wheel`: the .dist-info directory goes last, and RECORD last of all.
    in_info = name.startswith(dist_info + "/")
    return (in_info, in_info and name == f"{dist_info}/RECORD", name)


# ---------------------------------------------------------------------------- reading


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    # Directory entries carry nothing a wheel installer uses; they are dropped on rewrite.
    return {i.filename: i for i in zf.infolist() if not i.is_dir()}


def _read_metadata(zf: zipfile.ZipFile) -> str:
    info = _dist_info_dir(_members(zf))
    return zf.read(f"{info}/METADATA").decode("utf-8")


def requires_dist(wheel: Path) -> list[str]:
    """The `Requires-Dist` values of a wheel, as written (markers included)."""
    with zipfile.ZipFile(wheel) as zf:
        fields, _ = _split_headers(_read_metadata(zf))
    return [_field_value(raw) for raw in fields if _field_key(raw) == "requires-dist"]


def wheel_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def wheel_content_digest(path: Path) -> str:
    """sha256 over sorted (name, sha256 of content), RECORD excluded: equal for two wheels with
    the same files whatever their zip timestamps, order or compression."""
    outer = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        members = _members(zf)
        for name in sorted(members):
            if name.endswith(".dist-info/RECORD") and name.count("/") == 1:
                continue
            h = hashlib.sha256()
            with zf.open(members[name]) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            outer.update(f"{name}\0{h.hexdigest()}\n".encode())
    return outer.hexdigest()


# ---------------------------------------------------------------------------- writing


def repair_wheel(
    src: Path,
    out_dir: Path,
    *,
    label: str,
    tags: tuple[str, ...] = (),
    source_date_epoch: int,
    remove_requirements: tuple[str, ...] = ("nvidia-*",),
    elf_edits: ElfEdits | None = None,
) -> RepairResult:
    """Write a repaired copy of `src` into `out_dir` (atomically) and say what changed;
    `elf_edits`: the recipe's RPATH and vendored-library edits (builder.wheels.rpath)."""
    src = Path(src)
    old = _WheelName.parse(src.name)
    changes: list[str] = []

    with zipfile.ZipFile(src) as zin:
        why = escaping_member(zin)
        if why:
            raise RepairError(f"{src.name}: {why}; refusing to repair it", fix=REFUSE_FIX)
        members = _members(zin)
        info = _dist_info_dir(members)
        info_stem = info.removesuffix(".dist-info")
        for required in ("METADATA", "WHEEL"):
            if f"{info}/{required}" not in members:
                raise RepairError(f"{src.name}: {info}/{required} is missing")

        version = local_version(old.version, label, tags)
        metadata, meta_changes = _edit_metadata(
            zin.read(f"{info}/METADATA").decode("utf-8"), version, remove_requirements
        )
        changes += meta_changes

        elves = _elf_members(zin, members)
        plat = ".".join(_dedupe(_platform_tag(p) for p in old.plat.split(".")))
        py, abi, purelib = old.py, old.abi, None
        if plat == "any" and elves:
            py, abi, plat = _any_with_elf_tags(src.name, old, elves)
            purelib = False
        new = _WheelName(old.dist, version, old.build, py, abi, plat)
        if (old.py, old.abi, old.plat) != (py, abi, plat):
            changes.append(f"tag {old.py}-{old.abi}-{old.plat} -> {py}-{abi}-{plat}")

        wheel_text = zin.read(f"{info}/WHEEL").decode("utf-8")
        fields, _ = _split_headers(wheel_text)
        old_tags = [_field_value(raw) for raw in fields if _field_key(raw) == "tag"]
        expected = _expand(py, abi, plat)
        wheel_tags = expected
        if purelib is None and old_tags:
            # Keep the WHEEL's own order; fall back to the file name if the two disagree.
            mapped = _dedupe(
                "-".join([*t.split("-")[:2], _platform_tag(t.split("-")[-1])]) for t in old_tags
            )
            if set(mapped) == set(expected):
                wheel_tags = mapped
        wheel_text, wheel_changes = _edit_wheel_file(wheel_text, wheel_tags, purelib)
        changes += wheel_changes

        new_stem = f"{info_stem.rsplit('-', 1)[0]}-{version}"
        renames = {info: f"{new_stem}.dist-info"}
        if any(n.startswith(f"{info_stem}.data/") for n in members):
            renames[f"{info_stem}.data"] = f"{new_stem}.data"
        for a, b in renames.items():
            if a != b:
                changes.append(f"renamed {a}/ -> {b}/")
        new_info = renames[info]

        def rename(name: str) -> str:
            head, sep, rest = name.partition("/")
            return f"{renames.get(head, head)}{sep}{rest}"

        replaced = {f"{info}/METADATA": metadata.encode(), f"{info}/WHEEL": wheel_text.encode()}
        # A signature over the old RECORD is false after any edit.
        dropped = {f"{info}/RECORD.jws", f"{info}/RECORD.p7s"} & members.keys()
        changes += [f"removed invalid signature {n}" for n in sorted(dropped)]
        if elf_edits:
            patched, removed, elf_changes = elf_edits.apply(zin, members)
            replaced |= patched
            dropped |= removed
            changes += elf_changes
        entries = {
            rename(n): i for n, i in members.items() if n not in dropped and n != f"{info}/RECORD"
        }
        order = sorted(entries, key=lambda n: _zip_order(n, new_info))

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        final = out_dir / str(new)
        date_time = time.gmtime(max(source_date_epoch, _ZIP_EPOCH))[:6]

        def zipinfo(name: str, src: zipfile.ZipInfo | None, size: int) -> zipfile.ZipInfo:
            executable = src is not None and bool((src.external_attr >> 16) & 0o111)
            mode = 0o755 if executable or (src is not None and _is_shared_lib(name)) else 0o644
            return _zipinfo(name, date_time, mode, size)

        write_wheel(final, zin, entries, order, replaced, f"{new_info}/RECORD", zipinfo)

    name, _, _, parsed_tags = parse_wheel_filename(final.name)
    return RepairResult(
        path=final,
        name=str(name),
        version=version,
        tags=tuple(sorted(str(t) for t in parsed_tags)),
        changes=changes,
        is_pure=plat == "any",
        has_shared_libs=bool(elves),
    )


def _elf_members(zin: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict[str, str]:
    """Member -> its machine's platform suffix ("x86_64"), for every ELF file (by its magic,
    whatever its name: ctypes libraries, executables, abi3 and version-specific modules)."""
    found = {}
    for name, info in sorted(members.items()):
        if info.file_size < 4:
            continue
        with zin.open(info) as f:
            head = f.read(20)
        if head[:4] == _ELF_MAGIC:
            machine = int.from_bytes(head[18:20], "little") if len(head) == 20 else None
            found[name] = _ELF_MACHINES.get(machine, f"e_machine {machine}")
    return found


def _any_with_elf_tags(wheel: str, old: _WheelName, elves: dict[str, str]) -> tuple[str, ...]:
    """The tags of an "any" wheel that holds ELF files: its extensions' Python when they are
    `cpython-3XY` ones (`cp311-cp311`), else its own Python and ABI tags (`py3-none`: ctypes
    libraries, programs and abi3 modules need no one CPython); the platform of their machine."""
    machines = sorted(set(elves.values()))
    shown = ", ".join(list(elves)[:3]) + (", ..." if len(elves) > 3 else "")
    if len(machines) > 1 or machines[0].startswith("e_machine"):
        raise RepairError(
            f"{wheel} holds ELF files of machines {', '.join(machines)}: {shown}",
            fix="build one wheel per machine, of one that Linux wheels name (x86_64, aarch64)",
        )
    found = set()
    for lib in elves:
        if m := _CPYTHON.search(lib.rsplit("/", 1)[-1]):
            found.add(f"cp{m.group(1)}{m.group(2)}")
    if len(found) > 1:
        raise RepairError(
            f"{wheel} is tagged for any platform but contains extensions for several Pythons "
            f"({', '.join(sorted(found))}): {shown}",
            fix="build it as a platform wheel for one Python (a setuptools distribution with "
            "ext_modules, or has_ext_modules returning True), then repair it",
        )
    py = abi = found.pop() if found else None
    return py or old.py, abi or old.abi, f"linux_{machines[0]}"


def write_wheel(
    final: Path,
    zin: zipfile.ZipFile,
    entries: dict[str, zipfile.ZipInfo],
    order: list[str],
    replaced: dict[str, bytes],
    record_name: str,
    zipinfo: Callable[[str, zipfile.ZipInfo | None, int], zipfile.ZipInfo],
) -> None:
    """Write `entries` (new name -> member of `zin`) in `order`, with the contents of
    `replaced` (old name -> bytes) where given, then a RECORD of what was written. The file
    is made beside `final` and renamed over it only once complete and synced. `zipinfo`
    (name, source member or None for RECORD, size) decides times and modes."""
    tmp = temp_beside(final)
    try:
        with open(tmp, "wb") as raw, zipfile.ZipFile(raw, "w") as zout:
            record = []
            for name in order:
                src = entries[name]
                data = replaced.get(src.filename)
                zi = zipinfo(name, src, src.file_size if data is None else len(data))
                h, size = hashlib.sha256(), 0
                with zout.open(zi, "w") as dst:
                    for chunk in [data] if data is not None else _read_chunks(zin, src):
                        h.update(chunk)
                        size += len(chunk)
                        dst.write(chunk)
                record.append((name, _record_hash(h.digest()), str(size)))
            record.append((record_name, "", ""))
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(record)
            data = buf.getvalue().encode()
            zout.writestr(zipinfo(record_name, None, len(data)), data)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _zipinfo(name: str, date_time: tuple[int, ...], mode: int, size: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=date_time)  # type: ignore[arg-type]
    zi.create_system = 3  # unix, whatever host writes it, so modes mean the same everywhere
    zi.external_attr = (stat.S_IFREG | mode) << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi._compresslevel = _COMPRESSLEVEL  # type: ignore[attr-defined]
    # Known before writing, so the zip64 decision depends on the data only.
    zi.file_size = size
    return zi


def _read_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterable[bytes]:
    with zf.open(info) as f:
        while chunk := f.read(_CHUNK):
            yield chunk
