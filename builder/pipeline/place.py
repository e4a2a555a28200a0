"""The place step: the placement planner decides each wheel's wheelhouse folder; the wheels
go there, each with its manifest (`<wheel>.json`) beside it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from builder.files import write_atomic
from builder.images import scripts as steps
from builder.manifest import Manifest, TestRecord, manifest_path
from builder.pipeline.keys import target_spec
from builder.pipeline.model import RunContext, TargetResult
from builder.recipes import Recipe
from builder.sources import pypi
from builder.wheelhouse import placement


def place(
    ctx: RunContext,
    results: list[TargetResult],
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    images: dict[str, str],
) -> list[Path]:
    """Place every built wheel the planner accepts, with its manifest; return the paths."""
    req = ctx.request
    stack = req.targets[0].stack
    cands = [
        placement.Candidate(r.target.id, r.target.level_name, r.wheel, r.content_digest, r.is_pure)
        for r in results
        if r.wheel
    ]
    req.wheelhouse.mkdir(parents=True, exist_ok=True)
    decisions = placement.plan(cands, stack, placement.scan(req.wheelhouse, stack), force=req.force)
    by_target = {r.target.id: r for r in results}
    for d in decisions:
        res = by_target[d.target_id]
        res.placed, res.reason = d.folder, d.error or d.reason
    placed = placement.place(decisions, req.wheelhouse, cands)
    for d in decisions:
        if d.folder is None:
            continue
        res = by_target[d.target_id]
        spec_hash = target_spec(ctx.recipe, res.target, req.ccache).hash
        manifest = build_manifest(ctx, res, release, lock, images[res.target.id], spec_hash)
        write_atomic(manifest_path(req.wheelhouse / d.folder / d.wheel_name), manifest.to_json())
    return placed


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
            **{k: v for k, v in r.build_facts.items() if k != "python_cflags"},
            "python_cflags": py_flags,
        },
        "python": r.build_facts.get("python") or r.target.python,
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
