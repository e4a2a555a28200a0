"""The build backend's own requirements, asked at fetch time: PEP 517 backends add to
`[build-system] requires` when asked (`get_requires_for_build_wheel`: scikit-build-core asks
for cmake and ninja when the image has none, setuptools may ask for wheel, meson-python for
ninja). pypa/build's ProjectBuilder asks them in each target image, network on, in the build's
own venv and prepared source; what the venv lacks is fetched beside the build requirements and
locked with them, so the build itself stays offline."""

from __future__ import annotations

import json
from pathlib import Path

from builder.cache import Cache
from builder.engines.base import Engine, Mount, RunSpec
from builder.errors import BuildError, ConfigError
from builder.images import scripts as steps
from builder.images.paths import CA_PATH, DEPS_DIR, IN_DIR, PATCHES_DIR, STORE_DIR, TOOLS_DIR
from builder.pipeline.fetch import check_store_copies, host_ca_bundle, store_wheel, tail
from builder.pipeline.model import WheelRequest
from builder.progress import TargetProgressFn
from builder.providers import get_provider
from builder.recipes import Recipe
from builder.sources import pypi


def backend_requires(
    engine: Engine,
    progress: TargetProgressFn,
    images: dict[str, str],
    req: WheelRequest,
    recipe: Recipe,
    sdist: Path,
    facts: pypi.SdistFacts,
    build_requires: tuple[str, ...],
    deps: Path,
    work: Path,
) -> tuple[str, ...]:
    """What the backend asks for that `build_requires` does not give, once per distinct
    image of the targets (an image with cmake asks for less); those wheels land in `deps`.
    A rebuild (`req.pinned`) takes them from the locked files in `deps` only."""
    store = Cache(req.cache).wheels
    tools = work / "deps-tools"
    tools.mkdir(parents=True, exist_ok=True)
    ca = host_ca_bundle()
    extra: list[str] = []
    seen: set[str] = set()
    for t in req.targets:
        if images[t.id] in seen:
            continue
        seen.add(images[t.id])
        r = recipe.for_target(t)
        script = steps.backend_requires_script(
            sdist.name,
            facts.top_folder,
            list(build_requires),
            patches=r.patches,
            pre_build=r.pre_build,
            version=r.version,
            offline=req.pinned is not None,
        )
        provider = get_provider(t.provider)
        log = work / "logs" / f"{t.id}.backend.log"
        progress(t.id, f"ask {facts.build_backend or 'the backend'} what it needs")
        res = engine.run(
            RunSpec(
                image=images[t.id],
                # the build's modules: the backend looks for cmake where the build will
                command=provider.step_command(t, script, (*r.modules, *r.runtime_modules)),
                mounts=(
                    *provider.binds(t),
                    Mount(sdist.parent, IN_DIR),
                    Mount(deps, DEPS_DIR, read_only=False),
                    Mount(tools, TOOLS_DIR, read_only=False),
                    Mount(store, STORE_DIR),
                    *([Mount(r.patches_dir, PATCHES_DIR)] if r.patches else []),
                    *((Mount(ca, CA_PATH),) if ca else ()),
                ),
                env={
                    **provider.environment(t),
                    **r.env,
                    **({"PIP_CERT": CA_PATH} if ca else {}),
                },
                network=True,
            ),
            log,
        )
        if not res.ok and (err := provider.failure(t, res.output)):  # a module, the stack
            raise ConfigError(f"{t.id}: {err.message}; log: {log}", fix=err.fix)
        answer = _answer(res.output)
        if (not res.ok or answer is None) and req.pinned is None:
            # The query runs the source's build configuration (setup.py) with the network on;
            # one that fails here (it reaches for the network, or breaks) is left to the
            # offline build, whose failure names the cause; the declared requirements stand.
            progress(t.id, f"the backend could not be asked (log: {log}); building offline")
            continue
        if not res.ok or answer is None:
            missing = answer["missing"] if answer else []
            why = (
                f"the locked files lack what the backend asks for: {', '.join(missing)}"
                if missing and req.pinned is not None
                else f"{facts.build_backend or 'the build backend'} could not say what it "
                "needs to build a wheel (PEP 517 get_requires_for_build_wheel)"
            )
            raise BuildError(
                f"{t.id}: {why}:\n{tail(res.output)}\n  log: {log}",
                fix="add what the build needs to the recipe's [build] requires (or apt "
                "packages to [build] apt), or patch the source's build configuration",
            )
        for name in answer["missing"]:
            if name not in extra:
                extra.append(name)
        if answer["asked"]:
            progress(t.id, f"the backend asks for {', '.join(answer['asked'])}")
    for folder in (deps, tools):  # the index's wheels, shared by later runs
        check_store_copies(folder, store)
        for p in folder.glob("*.whl"):
            if not (store / p.name).exists():
                store_wheel(p, store)
    return tuple(extra)


def _answer(output: str) -> dict | None:
    """The probe's marked line: what the backend asked for and what of it was missing."""
    for line in reversed(output.splitlines()):
        if line.startswith(steps.BACKEND_MARK):
            try:
                return json.loads(line[len(steps.BACKEND_MARK) :])
            except ValueError:
                return None
    return None
