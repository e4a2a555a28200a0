"""The test step (network off): the wheel installed in a fresh venv with its runtime
dependencies and run natively or under QEMU with exactly the target's CPU level."""

from __future__ import annotations

import time
from pathlib import Path

from builder.engines.base import Mount, RunSpec
from builder.errors import ConfigError
from builder.images import scripts as steps
from builder.images.paths import IN_DIR, QEMU_PATH, RT_DEPS_DIR
from builder.pipeline import cuda
from builder.pipeline.fetch import tail
from builder.pipeline.model import RunContext, Status, TargetResult
from builder.providers import get_provider
from builder.targets.cputest import CpuTestPlan, interpret, plan_here, usable_qemu
from builder.wheels import contents


def test(ctx: RunContext, r: TargetResult, image: str, rt_deps: Path) -> None:
    """Test `r`'s wheel on its target's CPU level; `r` records the verdict."""
    t = r.target
    recipe = ctx.recipe.for_target(t)
    imports, note = recipe.import_names, None
    if imports is None:  # what the wheel holds (builder.wheels.contents)
        found = contents.import_names(r.wheel)
        imports, note = list(found.names), found.disagreement
        if not imports:
            r.status = Status.FAILED
            r.test_detail = (
                f"{r.wheel.name} holds no importable module or package, so the import test "
                "has nothing to import; fix: name the modules in the recipe's "
                "[package] import_names, or write import_names = [] and test with "
                "[test] commands"
            )
            return
    qemu, _ = usable_qemu()
    plan: CpuTestPlan = plan_here(t.cpu_level)
    r.test_how = f"{plan.reason}; Python {t.python}"  # the interpreter that runs it
    if plan.mode == "none":
        r.status = Status.NOT_TESTED
        r.test_detail = f"not tested: {plan.reason}"
        return
    script = steps.wheel_test_script(
        [r.wheel.name],
        imports,
        recipe.test_commands,
        recipe.test_requires,
        plan.qemu_cpu if plan.mode == "qemu" else None,
        python_code=recipe.test_python,
        pre_commands=recipe.test_pre_commands,
    )
    provider = get_provider(t.provider)  # a test loads the recipe's runtime_modules only
    mounts = [*provider.binds(t), Mount(r.wheel.parent, IN_DIR), Mount(rt_deps, RT_DEPS_DIR)]
    if plan.mode == "qemu":
        mounts.append(Mount(qemu, QEMU_PATH))
    r.test_log = ctx.work / "logs" / f"{t.id}.test.log"
    ctx.progress(t.id, f"test ({plan.mode}, network off)")
    t0 = time.monotonic()
    res = ctx.engine.run(
        RunSpec(
            image=image,
            command=provider.step_command(t, script, recipe.runtime_modules),
            mounts=tuple(mounts),
            env={**provider.environment(t), **cuda.test_env(t)},
            network=False,
        ),
        r.test_log,
    )
    r.seconds["test"] = time.monotonic() - t0
    if not res.ok and (err := provider.failure(t, res.output)):
        raise ConfigError(f"{t.id}: {err.message}; log: {r.test_log}", fix=err.fix)
    verdict = interpret(res.exit_code, res.output, plan, t.cpu_level)
    if verdict.status == "passed":
        r.status = Status.TESTED
        r.test_detail = (
            f"passed on Python {t.python} under QEMU, exactly {t.cpu_level.name}, every process"
            if plan.mode == "qemu"
            else f"passed on Python {t.python} natively (host has {t.cpu_level.name} and more)"
        )
    elif verdict.status == "not-run":  # the level could not be set up for every process
        r.status = Status.NOT_TESTED
        r.test_detail = f"{verdict.detail} (log: {r.test_log})"
    else:
        r.status = Status(verdict.status)
        r.test_detail = (
            f"{verdict.detail} (step: {steps.failed_step(res.output)}; "
            f"log: {r.test_log})\n{tail(res.output, 8)}"
        )
    if verdict.status == "passed" and (gpu := cuda.test_words(t)):
        r.test_detail += f"; {gpu}"
    if note:  # the wheel is right; its top_level.txt is not
        r.test_detail += f"\nnote: {note}; imported: {', '.join(imports)}"
