"""Legacy configs -> recipe files: one recipe per package (generic and version-specific configs
together), the patches they name copied beside it, every written recipe checked."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import ConfigError
from builder.recipes import PATCHES_DIR, SECTIONS, check_recipe, recipe_path, to_toml
from builder.recipes.legacy.convert import _Converter
from builder.recipes.legacy.expand import _nest
from builder.recipes.legacy.variables import Skipped


@dataclass
class LegacyResult:
    config: Path
    name: str  # the package, from the file name
    recipe: Path | None = None
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the written recipe failed its check
    notes: list[Skipped] = field(default_factory=list)  # left out, but without effect in bash
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        return not self.skipped and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "recipe": str(self.recipe) if self.recipe else None,
            "whole": self.whole,
            "not_converted": [s.__dict__ for s in self.skipped],
            "errors": self.errors,
            "notes": [s.__dict__ for s in self.notes],
        }


def package_of(config: Path) -> tuple[str, str | None]:
    """`Cartopy.sh` -> ("Cartopy", None); `Cartopy-0.20.2.sh` -> ("Cartopy", "0.20.2"): the
    legacy script sources `<pkg>-<version>.sh` in place of `<pkg>.sh` for that version."""
    stem = config.name.removesuffix(".sh")
    m = re.fullmatch(r"(.+?)-(\d[A-Za-z0-9.+!]*)", stem)
    if m:
        try:
            Version(m[2])
            return m[1], m[2]
        except InvalidVersion:
            pass
    return stem, None


def convert(
    config: Path, patches_dir: Path | None = None, others: tuple[str, ...] = ()
) -> tuple[dict[str, Any], _Converter]:
    """The recipe data of one legacy config, and the converter (its skipped list, patches).
    `others`: the versions that have their own config, which build_wheel.sh sources instead of
    this generic one: all of this one goes under `[versions."!=X"]` so that none of it applies
    to them (key by key, the generic's target tables would win over theirs)."""
    package, version = package_of(config)
    text = config.read_text()
    conv = _Converter(config, package, patches_dir)
    conv.run(text)
    data: dict[str, Any] = {"package": {"name": canonicalize_name(package)}}
    order = {name: i for i, name in enumerate(SECTIONS)}
    if version:
        outer: tuple[tuple[str, str], ...] = (("versions", f"=={version}"),)
    else:
        outer = (("versions", ",".join(f"!={v}" for v in others)),) if others else ()
    for atoms, sections in conv.tables.items():
        sections = dict(sorted(sections.items(), key=lambda kv: order[kv[0]]))
        if any(kind in ("dead", "never") for kind, _ in atoms):
            continue
        path = _nest(outer + atoms)
        node = data
        for kind, sel in path:
            node = node.setdefault(kind, {}).setdefault(sel, {})
        for section, values in sections.items():
            node.setdefault(section, {}).update(values)
    return data, conv


def import_configs(
    configs: list[Path], out_dir: Path, *, patches_dir: Path | None = None, force: bool = False
) -> list[LegacyResult]:
    """Convert each config into `out_dir/<name>.toml` (configs of one package, generic and
    version-specific, into one recipe), copy the patches they name to `out_dir/patches/`, and
    check every written recipe."""
    for c in configs:
        if not c.is_file():
            raise ConfigError(f"{c}: no such file", fix="pass legacy config/<pkg>.sh files")
    by_name: dict[str, list[Path]] = {}
    for c in configs:
        by_name.setdefault(canonicalize_name(package_of(c)[0]), []).append(c)
    results: list[LegacyResult] = []
    for name, files in by_name.items():
        path = recipe_path(name, out_dir)
        if path.exists() and not force:
            raise ConfigError(f"{path} exists", fix="pass --force to replace it, or --out DIR")
        merged: dict[str, Any] = {"package": {"name": name}}
        file_results = []
        # build_wheel.sh finds `<pkg>-<version>.sh`, else `<pkg>.sh`, case-insensitively and
        # with - and _ alike: of two files it would confuse, it sources one; the others are
        # reported, not merged.
        kept: dict[str | None, Path] = {}
        for config in sorted(files, key=lambda f: f.name):
            version = package_of(config)[1]
            if version in kept:
                file_results.append(
                    LegacyResult(
                        config,
                        name,
                        skipped=[
                            Skipped(
                                0,
                                config.name,
                                f"build_wheel.sh cannot tell it from {kept[version].name} (it "
                                "matches names case-insensitively, - and _ alike); "
                                f"{kept[version].name} is converted",
                            )
                        ],
                    )
                )
                continue
            kept[version] = config
        versions = tuple(v for v in kept if v)
        for version, config in sorted(kept.items(), key=lambda kv: kv[0] is not None):
            pdir = patches_dir or config.resolve().parent.parent / PATCHES_DIR
            data, conv = convert(config, pdir, () if version else versions)
            _merge(merged, data)
            res = LegacyResult(config, name, skipped=conv.skipped, data=data, notes=conv.notes)
            for n, src in conv.patch_files.items():
                (out_dir / PATCHES_DIR).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out_dir / PATCHES_DIR / n)
            file_results.append(res)
        out_dir.mkdir(parents=True, exist_ok=True)
        header = [
            f"converted by `cbuild recipe import-legacy` from {', '.join(f.name for f in files)}"
        ]
        path.write_text(to_toml(merged, comments={"package": header}))
        errors = [e.message for e in check_recipe(path)]
        for r in file_results:
            r.recipe, r.errors = path, errors
        results += file_results
    return results


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
