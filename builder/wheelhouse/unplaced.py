"""Unplaced exports: what a split job (`cbuild wheel --no-place --out DIR`) hands to the job
that places (`cbuild place DIR...`). One folder per target holds its repaired, tested wheel and
manifest; `cbuild-export.json`, written last, says which package version, which targets and
which wheels (sha256) the export holds, so a partial upload is told from a whole one.

    DIR/cbuild-export.json
    DIR/<target id>/<wheel>   DIR/<target id>/<wheel>.json

Reading checks everything placement cannot: each wheel present with its sha256 and manifest,
one package version per export, a target given by two exports with different wheels.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from builder.errors import PlacementError
from builder.files import copy_atomic, write_atomic
from builder.manifest import Manifest, ManifestError, manifest_path
from builder.sources.pypi import sha256_of

EXPORT_FILE = "cbuild-export.json"
FORMAT = 1


@dataclass(frozen=True)
class Item:
    """One target's wheel in an export."""

    target_id: str
    level_name: str
    wheel: Path  # in the export folder, its manifest beside it
    sha256: str
    manifest: Manifest


@dataclass(frozen=True)
class Export:
    folder: Path
    package: str
    version: str
    stack: str
    targets: tuple[str, ...]  # the targets of the run that wrote it
    items: tuple[Item, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return canonicalize_name(self.package), self.version, self.stack


def write(
    out: Path,
    package: str,
    version: str,
    stack: str,
    wheels: Sequence[tuple[str, str, Path]],
    manifests: dict[str, str],
) -> list[Path]:
    """Copy each (target id, level, wheel) with its manifest JSON (by target id) into `out`,
    then the export file. Returns the wheels' new paths."""
    out = Path(out)
    rows, copied = [], []
    for target_id, level_name, wheel in wheels:
        dest = out / target_id / wheel.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        copy_atomic(wheel, dest)
        write_atomic(manifest_path(dest), manifests[target_id])
        rows.append(
            {
                "target": target_id,
                "level": level_name,
                "wheel": f"{target_id}/{wheel.name}",
                "sha256": sha256_of(dest),
            }
        )
        copied.append(dest)
    doc = {
        "cbuild_export": FORMAT,
        "package": package,
        "version": version,
        "stack": stack,
        "targets": [t for t, _, _ in wheels],
        "wheels": rows,
    }
    write_atomic(out / EXPORT_FILE, json.dumps(doc, indent=2) + "\n")
    return copied


def read(folders: Iterable[Path]) -> list[Export]:
    """Every export under `folders` (searched to any depth: an artifact download nests them),
    checked; a folder that holds wheels but no export file is refused as incomplete."""
    exports: list[Export] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise PlacementError(
                f"{folder}: no such folder", fix="pass the folders that `--no-place --out` wrote"
            )
        found = sorted(folder.rglob(EXPORT_FILE))
        covered = {p.parent for p in found}
        stray = sorted(w for w in folder.rglob("*.whl") if not any(c in w.parents for c in covered))
        if stray:
            raise PlacementError(
                f"incomplete input: {stray[0]} is in no export ({EXPORT_FILE} missing: the "
                "job that wrote it did not finish, or the upload lost it)",
                fix="run that job again, or leave its folder out",
            )
        if not found:
            raise PlacementError(
                f"{folder}: no {EXPORT_FILE} under it: nothing to place",
                fix="pass the folders that `cbuild wheel --no-place --out DIR` wrote",
            )
        exports += [_read_one(p) for p in found]
    return exports


def _read_one(path: Path) -> Export:
    where = str(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlacementError(f"{where}: unreadable ({exc})", fix="write the export again") from exc
    if not isinstance(doc, dict) or doc.get("cbuild_export") != FORMAT:
        raise PlacementError(
            f"{where}: not a cbuild export of format {FORMAT}",
            fix="write it with this cbuild's `cbuild wheel --no-place --out DIR`",
        )
    items = []
    for row in doc["wheels"]:
        wheel = path.parent / row["wheel"]
        if not wheel.is_file():
            raise PlacementError(
                f"incomplete input: {where} lists {row['wheel']}, which is missing",
                fix="download or copy the whole export folder",
            )
        if (got := sha256_of(wheel)) != row["sha256"]:
            raise PlacementError(
                f"{wheel}: sha256 {got[:12]}, the export says {row['sha256'][:12]}: changed "
                "after the export was written",
                fix="export it again; never edit an export's wheels",
            )
        try:
            manifest = Manifest.load(manifest_path(wheel))
        except ManifestError as exc:
            raise PlacementError(
                f"incomplete input: {wheel.name}: {exc.message}", fix="export it again"
            ) from exc
        if manifest.sha256 != row["sha256"] or manifest.target_id != row["target"]:
            raise PlacementError(
                f"{wheel}: its manifest is for another wheel or target",
                fix="export it again",
            )
        items.append(Item(row["target"], row["level"], wheel, row["sha256"], manifest))
    return Export(
        path.parent,
        doc["package"],
        doc["version"],
        doc["stack"],
        tuple(doc["targets"]),
        tuple(items),
    )


def group(exports: Sequence[Export], expected: Sequence[str] = ()) -> dict[tuple, list[Item]]:
    """One package version's items from all its exports, by (package, version, stack). Refused:
    a target exported twice with different wheels, a target a run named but no export holds,
    and, with `expected`, a target of that list missing."""
    groups: dict[tuple, dict[str, Item]] = {}
    named: dict[tuple, set[str]] = {}
    for e in exports:
        items = groups.setdefault(e.key, {})
        named.setdefault(e.key, set()).update(e.targets)
        for it in e.items:
            seen = items.get(it.target_id)
            if seen is not None and seen.sha256 != it.sha256:
                raise PlacementError(
                    f"conflicting input: {e.package} {e.version} for {it.target_id} twice, "
                    f"with different wheels ({seen.wheel} {seen.sha256[:12]}, {it.wheel} "
                    f"{it.sha256[:12]})",
                    fix="keep one export per target (the newest), remove the other",
                )
            items.setdefault(it.target_id, it)
    for key, items in groups.items():
        want = set(named[key]) | set(expected)
        if missing := sorted(want - set(items)):
            raise PlacementError(
                f"incomplete input: {key[0]} {key[1]} has no wheel for "
                f"{', '.join(missing)} (its job failed, or its export was not passed)",
                fix="run the missing targets' jobs, then place all exports together; nothing "
                "was placed",
            )
    return {k: list(v.values()) for k, v in groups.items()}


__all__ = ["EXPORT_FILE", "Export", "Item", "group", "read", "write"]
