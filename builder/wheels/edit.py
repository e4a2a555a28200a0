"""Edits of finished wheels: requirements, local version tags and label, distribution suffix.

Used by `cbuild wheel-edit` on wheels already in a wheelhouse, and by the pipeline for a
recipe's [wheel] table after repair. Built on builder.wheels.repair's header and zip helpers, so an
edited wheel keeps every byte it does not mean to change, gets a fresh RECORD, and is written
next to its destination under a temporary name: the original stays in place until the new file is
complete and synced, then a rename replaces it.

Names: a wheel's distribution name is kept as the wheel spells it, in the file name and in the
.dist-info folder (`ruamel.yaml.clib-0.2.8.dist-info` stays dotted; pip matches it by canonical
name); a suffix is appended in the same escaped form.
"""

from __future__ import annotations

import fnmatch
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import CbuildError
from builder.files import write_atomic
from builder.manifest import manifest_path
from builder.recipes import RENAME  # the recipe's "old->new", one spelling
from builder.wheels.members import REFUSE_FIX, escaping_member
from builder.wheels.repair import (
    _COMPRESSLEVEL,
    RepairResult,
    _dist_info_dir,
    _eol,
    _field_key,
    _field_value,
    _members,
    _split_headers,
    _WheelName,
    _zip_order,
    wheel_content_digest,
    wheel_sha256,
    write_wheel,
)


class WheelEditError(CbuildError):
    """An edit that cannot be made (a bad requirement, a name taken, a malformed wheel)."""

    exit_code = 2


@dataclass(frozen=True)
class WheelEdits:
    add: tuple[str, ...] = ()  # PEP 508 requirements to add
    remove: tuple[str, ...] = ()  # names or name patterns (`nvidia-*`)
    update: tuple[str, ...] = ()  # `numpy<2` (markers kept) or `old->new` (rename)
    tags: tuple[str, ...] = ()  # local version tags, put first: 1.0+torch27.computecanada
    label: str | None = None  # the site label, appended when missing: 1.0+computecanada
    suffix: str = ""  # appended to the distribution name: foo -> foo-gpu

    def __bool__(self) -> bool:
        return any((self.add, self.remove, self.update, self.tags, self.label, self.suffix))

    def check(self) -> None:
        """Raise WheelEditError for an edit that could never apply, before any wheel is read."""
        for r in (*self.add, *(u.partition(RENAME)[2] or u for u in self.update)):
            _parse(r.strip())
        for u in self.update:
            old, sep, _ = u.partition(RENAME)
            if sep and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", old.strip()):
                raise WheelEditError(f"{old.strip()!r} in {u!r} is not a project name")
        for p in self.remove:
            if not re.fullmatch(r"[A-Za-z0-9*?\[\]][A-Za-z0-9._*?\[\]!-]*", p):
                raise WheelEditError(
                    f"{p!r} is not a project name or name pattern",
                    fix="name the requirement to remove, e.g. torch or 'nvidia-*'",
                )
        for t in (*self.tags, *([self.label] if self.label else [])):
            if not re.fullmatch(r"[A-Za-z0-9]+", t):
                raise WheelEditError(f"local version tag {t!r} must be letters and digits")
        if self.suffix and not re.fullmatch(r"[-_.]?[A-Za-z0-9]+([-_.][A-Za-z0-9]+)*", self.suffix):
            raise WheelEditError(f"suffix {self.suffix!r} cannot end a project name")


@dataclass
class EditResult:
    source: Path
    path: Path  # the edited wheel (== source when nothing changed in place)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # requested edits that found nothing to do

    def as_dict(self) -> dict[str, Any]:
        return {
            "wheel": str(self.source),
            "result": str(self.path),
            "changed": bool(self.changes),
            "changes": self.changes,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------- pure parts


def _parse(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise WheelEditError(
            f"invalid requirement {text!r}: {str(exc).splitlines()[0]}",
            fix="write PEP 508 requirements, e.g. 'numpy>=1.26' or 'torch; extra == \"gpu\"'",
        ) from exc


def _name_pattern(p: str) -> str:
    return re.sub(r"[-_.]+", "-", p).lower()


def _format(name: str, extras: Iterable[str], spec: str, marker: Any) -> str:
    extra = f"[{','.join(sorted(extras))}]" if extras else ""
    return str(Requirement(f"{name}{extra}{spec}{f'; {marker}' if marker else ''}"))


def edit_requirements(
    values: list[str], edits: WheelEdits
) -> tuple[list[str], list[str], list[str]]:
    """Apply remove, update and add to `Requires-Dist` values; (new values, changes, notes).

    An update keeps each matched requirement's markers and extras unless it gives its own, so
    `numpy<2` on `numpy>=1.21; python_version < "3.13"` keeps the marker. A rename `a->b` keeps
    a's specifier too when b has none. Adding a requirement the wheel already has (same name and
    markers) is an error: it would be ambiguous which one pip honours.
    """
    entries, changes, notes = _edit(values, edits)
    return [v for _, v in entries], changes, notes


def _edit(
    values: list[str], edits: WheelEdits
) -> tuple[list[tuple[int | None, str]], list[str], list[str]]:
    """edit_requirements, each result paired with the index of the value it came from (None
    for an added one), so that METADATA can be edited in place."""
    reqs: list[tuple[int | None, str, Requirement | None]] = []
    for i, v in enumerate(values):
        try:
            reqs.append((i, v, Requirement(v)))
        except InvalidRequirement:
            reqs.append((i, v, None))  # kept as written, never matched
    changes: list[str] = []
    notes: list[str] = []

    for pattern in edits.remove:
        pat = _name_pattern(pattern)
        kept = []
        for entry in reqs:
            r = entry[2]
            if r is not None and fnmatch.fnmatchcase(canonicalize_name(r.name), pat):
                changes.append(f"removed Requires-Dist: {entry[1]}")
            else:
                kept.append(entry)
        if len(kept) == len(reqs):
            notes.append(f"no requirement matches {pattern!r} to remove")
        reqs = kept

    for update in edits.update:
        old_name, sep, new_text = update.partition(RENAME)
        new = _parse((new_text if sep else update).strip())
        target = canonicalize_name(old_name.strip() if sep else new.name)
        found = False
        for k, (i, v, r) in enumerate(reqs):
            if r is None or canonicalize_name(r.name) != target:
                continue
            found = True
            spec = str(new.specifier) if (new.specifier or not sep) else str(r.specifier)
            value = _format(new.name, new.extras or r.extras, spec, new.marker or r.marker)
            if value != v:
                changes.append(f"Requires-Dist: {v} -> {value}")
                reqs[k] = (i, value, Requirement(value))
        if not found:
            notes.append(f"no requirement on {target!r} to update")

    for add in edits.add:
        new = _parse(add.strip())
        name = canonicalize_name(new.name)
        for _, v, r in reqs:
            if r is not None and canonicalize_name(r.name) == name and r.marker == new.marker:
                raise WheelEditError(
                    f"the wheel already requires {v!r}; not adding {add!r}",
                    fix=f"use --update-req {str(new)!r} to change it",
                )
        reqs.append((None, str(new), new))
        changes.append(f"added Requires-Dist: {new}")
    return [(i, v) for i, v, _ in reqs], changes, notes


def new_version(version: str, tags: tuple[str, ...] = (), label: str | None = None) -> str:
    """Tags go first in the local part, the label last; what is already there is kept:
    `1.0+computecanada` with tag torch27 -> `1.0+torch27.computecanada`."""
    try:
        v = Version(version)
        norm = (
            Version(f"0+{'.'.join((*tags, *([label] if label else [])))}").local
            if (tags or label)
            else ""
        )
    except InvalidVersion as exc:
        raise WheelEditError(f"cannot add {tags or label!r} to version {version!r}: {exc}") from exc
    if not norm:
        return version
    parts = norm.split(".")
    new_tags, new_label = (parts[:-1], parts[-1]) if label else (parts, None)
    existing = v.local.split(".") if v.local else []
    local = [*(t for t in new_tags if t not in existing), *existing]
    if new_label and new_label not in existing:
        local.append(new_label)
    if local == existing:
        return version
    return f"{version.split('+', 1)[0]}+{'.'.join(local)}"


def _escape(name: str) -> str:
    """A name as a wheel file name writes it (`-` is the field separator)."""
    return re.sub(r"[-_.]+", "_", name) if "-" in name else name


def _edit_metadata(
    text: str, version: str, name: str | None, edits: WheelEdits
) -> tuple[str, list[str], list[str]]:
    """Version, Name and Requires-Dist edited where they stand; every other byte kept. Added
    requirements go after the last Requires-Dist (or before the first Provides-Extra)."""
    fields, body = _split_headers(text)
    eol = _eol(fields[0][-1]) if fields else "\n"
    values = [_field_value(raw) for raw in fields if _field_key(raw) == "requires-dist"]
    entries, changes, notes = _edit(values, edits)
    kept = {i: v for i, v in entries if i is not None}
    added = [[f"Requires-Dist: {v}{eol}"] for i, v in entries if i is None]
    anchor = next(
        (k for k in range(len(fields) - 1, -1, -1) if _field_key(fields[k]) == "requires-dist"),
        next((k - 1 for k, f in enumerate(fields) if _field_key(f) == "provides-extra"), None),
    )
    out: list[list[str]] = []
    n_req = 0
    meta_changes: list[str] = []
    if anchor == -1:
        out += added
    for k, raw in enumerate(fields):
        key = _field_key(raw)
        if key == "version" and _field_value(raw) != version:
            meta_changes.append(f"METADATA Version: {_field_value(raw)} -> {version}")
            raw = [f"Version: {version}{_eol(raw[-1])}"]
        elif key == "name" and name and _field_value(raw) != name:
            meta_changes.append(f"METADATA Name: {_field_value(raw)} -> {name}")
            raw = [f"Name: {name}{_eol(raw[-1])}"]
        elif key == "requires-dist":
            n_req += 1
            if n_req - 1 not in kept:
                raw = []
            elif kept[n_req - 1] != values[n_req - 1]:
                raw = [f"Requires-Dist: {kept[n_req - 1]}{_eol(raw[-1])}"]
        if raw:
            out.append(raw)
        if k == anchor:
            out += added
    if anchor is None:
        out += added
    if not changes and not meta_changes:
        return text, [], notes
    return "".join(line for raw in out for line in raw) + body, meta_changes + changes, notes


# ---------------------------------------------------------------------------- writing


def edit_wheel(
    src: Path, edits: WheelEdits, out_dir: Path | None = None, *, force: bool = False
) -> EditResult:
    """Write `src` edited into `out_dir` (default: beside it, replacing it). Nothing is written
    when nothing changes. A different existing file under the new name is refused unless
    `force`. The manifest beside a wheelhouse wheel (`<wheel>.json`) follows the wheel."""
    edits.check()
    src = Path(src)
    old = _WheelName.parse(src.name)
    in_place = out_dir is None or Path(out_dir).resolve() == src.parent.resolve()
    out_dir = src.parent if out_dir is None else Path(out_dir)

    try:
        zin = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelEditError(f"{src}: not a readable wheel ({exc})") from exc
    with zin:
        why = escaping_member(zin)
        if why:
            raise WheelEditError(f"{src.name}: {why}; refusing to edit it", fix=REFUSE_FIX)
        members = _members(zin)
        try:
            info = _dist_info_dir(members)
        except CbuildError as exc:
            raise WheelEditError(f"{src.name}: {exc.message}", exc.fix) from exc
        for required in ("METADATA", "WHEEL"):
            if f"{info}/{required}" not in members:
                raise WheelEditError(f"{src.name}: {info}/{required} is missing")
        meta_text = zin.read(f"{info}/METADATA").decode("utf-8")
        meta_fields, _ = _split_headers(meta_text)
        meta = {_field_key(raw): _field_value(raw) for raw in meta_fields}
        if "version" not in meta or "name" not in meta:
            raise WheelEditError(f"{src.name}: METADATA has no Name or Version")
        version = new_version(meta["version"], edits.tags, edits.label)
        name = meta["name"] + edits.suffix if edits.suffix else None
        metadata, changes, notes = _edit_metadata(meta_text, version, name, edits)

        info_stem = info.removesuffix(".dist-info")
        dist_part = info_stem.rsplit("-", 1)[0] + _escape(edits.suffix)
        new_stem = f"{dist_part}-{version}"
        renames = {info: f"{new_stem}.dist-info"}
        if any(n.startswith(f"{info_stem}.data/") for n in members):
            renames[f"{info_stem}.data"] = f"{new_stem}.data"
        changes += [f"renamed {a}/ -> {b}/" for a, b in renames.items() if a != b]
        new_name = _WheelName(
            old.dist + _escape(edits.suffix), version, old.build, old.py, old.abi, old.plat
        )
        final = out_dir / str(new_name)
        result = EditResult(src, final if changes else src, changes, notes)
        if not changes:
            return result
        if final.exists() and not (in_place and final.resolve() == src.resolve()) and not force:
            raise WheelEditError(
                f"{final} already exists; not replacing it with the edit of {src.name}",
                fix="pass --force to replace it, or --out DIR to write elsewhere",
            )
        new_info = renames[info]

        def rename(n: str) -> str:
            head, sep, rest = n.partition("/")
            return f"{renames.get(head, head)}{sep}{rest}"

        replaced = {f"{info}/METADATA": metadata.encode()}
        # A signature over the old RECORD is false after any edit.
        signatures = {f"{info}/RECORD.jws", f"{info}/RECORD.p7s"} & members.keys()
        changes += [f"removed invalid signature {n}" for n in sorted(signatures)]
        dropped = {f"{info}/RECORD", *signatures}
        entries = {rename(n): i for n, i in members.items() if n not in dropped}
        order = sorted(entries, key=lambda n: _zip_order(n, new_info))
        out_dir.mkdir(parents=True, exist_ok=True)
        meta_info = members[f"{info}/METADATA"]

        def zipinfo(name: str, src: zipfile.ZipInfo | None, size: int) -> zipfile.ZipInfo:
            # Kept from the source: modes and times, so an edit changes only what it must
            # (RECORD takes METADATA's).
            like = src or meta_info
            zi = zipfile.ZipInfo(name, date_time=like.date_time)
            zi.create_system, zi.external_attr = like.create_system, like.external_attr
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi._compresslevel = _COMPRESSLEVEL  # type: ignore[attr-defined]
            zi.file_size = size
            return zi

        write_wheel(final, zin, entries, order, replaced, f"{new_info}/RECORD", zipinfo)
    if in_place and final.resolve() != src.resolve():
        src.unlink()  # only now: the edited wheel is complete under its new name
    _move_manifest(src, final, changes, in_place)
    return result


def _move_manifest(src: Path, final: Path, changes: list[str], in_place: bool) -> None:
    """Keep a wheelhouse manifest (`<wheel>.json`) true: new name, new sha256, the edits."""
    old = manifest_path(src)
    if not old.is_file():
        return
    data = json.loads(old.read_text())
    data["wheel"] = final.name
    data["sha256"] = wheel_sha256(final)
    data.setdefault("edits", []).append(changes)
    new = manifest_path(final)
    write_atomic(new, json.dumps(data, indent=2) + "\n")
    if in_place and new != old:
        old.unlink()


def apply_to_repaired(
    result: RepairResult,
    *,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
    update: tuple[str, ...] = (),
    suffix: str = "",
) -> tuple[RepairResult, EditResult]:
    """A recipe's [wheel] edits on a freshly repaired wheel, in place; the repair result updated
    to the new file. The zip stays deterministic: entry times and modes come from the repair."""
    edit = edit_wheel(result.path, WheelEdits(add, remove, update, suffix=suffix))
    name, _, _, tags = parse_wheel_filename(edit.path.name)
    updated = RepairResult(
        path=edit.path,
        name=str(name),
        version=result.version,
        tags=tuple(sorted(str(t) for t in tags)),
        changes=[*result.changes, *edit.changes],
        is_pure=result.is_pure,
        has_shared_libs=result.has_shared_libs,
    )
    return updated, edit


__all__ = [
    "EditResult",
    "WheelEditError",
    "WheelEdits",
    "apply_to_repaired",
    "edit_requirements",
    "edit_wheel",
    "new_version",
    "wheel_content_digest",
]
