"""The place step: the placement planner decides each wheel's wheelhouse folder from the
builds and their ISA scans; under the wheelhouse lock the wheels go there, each with its
manifest (`<wheel>.json`) beside it. `export` is the same step for a split job: the wheels and
manifests go to a folder, unplaced, for `cbuild place` to decide with the other targets'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from builder.files import write_atomic
from builder.images import scripts as steps
from builder.manifest import Manifest, TestRecord, manifest_path
from builder.pipeline.keys import target_spec
from builder.pipeline.model import RunContext, TargetResult
from builder.recipes import Recipe
from builder.sources import pypi
from builder.wheelhouse import placement, unplaced
from builder.wheelhouse.layout import GENERIC
from builder.wheels.isascan import scan_wheel


def with_evidence(cands: Sequence[placement.Candidate]) -> list[placement.Candidate]:
    """The candidates with their ISA scans where placement weighs them: the compiled builds
    of a package that has both a baseline and a level build (nothing else needs a scan)."""
    by_pkg: dict[str, set[str]] = {}
    for c in cands:
        if not c.is_pure:
            by_pkg.setdefault(c.wheel.name.split("-", 1)[0], set()).add(
                "base" if c.level_name == GENERIC else "level"
            )
    scans: dict[Path, Any] = {}
    out = []
    for c in cands:
        if c.is_pure or by_pkg[c.wheel.name.split("-", 1)[0]] != {"base", "level"}:
            out.append(c)
            continue
        if c.wheel not in scans:
            scans[c.wheel] = scan_wheel(c.wheel)
        out.append(replace(c, isa=scans[c.wheel]))
    return out


def candidates(ctx: RunContext, results: list[TargetResult]) -> list[placement.Candidate]:
    return with_evidence(
        [
            placement.Candidate(
                r.target.id,
                r.target.level_name,
                r.wheel,
                r.content_digest,
                r.is_pure,
                per_level=ctx.recipe.for_target(r.target).per_level,
                accelerator=r.target.accelerator,
            )
            for r in results
            if r.wheel
        ]
    )


def place(
    ctx: RunContext,
    results: list[TargetResult],
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    images: dict[str, str],
) -> list[Path]:
    """Place every built wheel the planner accepts, with its manifest; return the paths."""
    req = ctx.request
    by_target = {r.target.id: r for r in results}

    def record(decisions: list[placement.Decision]) -> None:
        for d in decisions:
            res = by_target[d.target_id]
            res.placed, res.reason = d.folder, d.error or d.reason

    def write_manifest(d: placement.Decision, wheel: Path) -> None:
        write_atomic(
            manifest_path(wheel),
            _manifest(ctx, by_target[d.target_id], release, lock, images).to_json(),
        )

    _, placed = placement.commit(
        candidates(ctx, results),
        req.targets[0].stack,
        req.wheelhouse,
        force=req.force,
        beside=write_manifest,
        on_plan=record,
        what=f"cbuild wheel {release.name} {release.version}",
    )
    return placed


def export(
    ctx: RunContext,
    results: list[TargetResult],
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    images: dict[str, str],
    out: Path,
) -> list[Path]:
    """Write every target's wheel and manifest to `out`, unplaced (`wheelhouse.unplaced`)."""
    done = [r for r in results if r.wheel]
    for r in done:
        r.reason = f"exported unplaced to {out}/{r.target.id}/; `cbuild place` places it"
    return unplaced.write(
        out,
        release.name,
        release.version,
        ctx.request.targets[0].stack.name,
        [(r.target.id, r.target.level_name, r.wheel) for r in done],
        {r.target.id: _manifest(ctx, r, release, lock, images).to_json() for r in done},
    )


def _manifest(
    ctx: RunContext,
    r: TargetResult,
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    images: dict[str, str],
) -> Manifest:
    spec_hash = target_spec(ctx.recipe, r.target, ctx.request.ccache).hash
    return build_manifest(ctx, r, release, lock, images[r.target.id], spec_hash)


def build_manifest(
    ctx: RunContext,
    r: TargetResult,
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    image: str,
    spec_hash: str,
) -> Manifest:
    engine = ctx.engine
    return Manifest(
        package=release.name,
        version=release.version,
        target=r.target.as_dict(),
        wheel=r.wheel.name,
        sha256=r.sha256,
        engine=engine.describe(),
        # False where the engine could not switch the network off (Apptainer refusing --network).
        network_isolated=engine.network_isolated,
        image=image,
        image_id=engine.image_id(image),
        image_spec_hash=spec_hash,
        provider=r.target.provider,
        test=TestRecord(r.status, r.test_how, r.test_detail),
        source_date_epoch=r.source_date_epoch,
        lock=[asdict(e) for e in lock],
        **provenance(r, ctx.recipe),
    )


def provenance(r: TargetResult, recipe: Recipe) -> dict[str, Any]:
    """What `cbuild rebuild`/`verify` need beyond the rest of the manifest: the build as it ran
    (key, environment, compiler, Python) and the recipe, resolved and as written."""
    resolved = recipe.for_target(r.target)
    flags = r.build_env.get("CFLAGS")
    py_flags = r.build_facts.get("python_cflags")
    return {
        "build": {
            "key": r.build_key,
            "built_on": r.built_on or r.target.id,
            "steps_version": steps.STEPS_VERSION,
            "env": r.build_env,
            # The build script puts Python's own CFLAGS before the target's.
            "effective_cflags": f"{py_flags} {flags}" if py_flags and flags else flags,
            **{
                k: v
                for k, v in r.build_facts.items()
                if k not in ("python_cflags", "image_packages")
            },
            "python_cflags": py_flags,
        },
        "python": r.build_facts.get("python") or r.target.python,
        "image_packages": r.build_facts.get("image_packages"),
        "recipe": {
            "resolved": resolved.as_dict(),
            "file": recipe.path.read_text() if recipe.path and recipe.path.is_file() else None,
            "patches": {
                name: path.read_text(errors="surrogateescape")
                for name, path in zip(resolved.patches, resolved.patch_files, strict=True)
                if path.is_file()
            },
        },
    }
