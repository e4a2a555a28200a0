"""The shipped recipes (builder/data/recipes/) through the real engine, from PyPI: annoy with its
patch, built for x86-64-v3 and tested under QEMU's exact x86-64-v3 CPU."""

from __future__ import annotations

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.recipes import BUILTIN_RECIPES, load_recipe
from builder.targets.model import resolve

pytestmark = [pytest.mark.integration, pytest.mark.network]

REPO_RECIPES = BUILTIN_RECIPES  # shipped as package data (builder/data/recipes)


def test_annoy_builds_for_the_target_level_not_the_build_machine(engine, tmp_path) -> None:
    recipe = load_recipe("annoy", "1.17.3", REPO_RECIPES)
    assert recipe.patches == ("annoy-1.17-setup.patch",)
    req = WheelRequest(
        "annoy",
        "1.17.3",
        tuple(resolve(["gentoo2023-x86-64-v3"])),
        tmp_path / "wheelhouse",
        tmp_path / "cache",
        REPO_RECIPES,
    )
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested" and "QEMU" in r.test_how, r.test_detail
    log = r.build_log.read_text()
    assert "::cbuild-step:: patch annoy-1.17-setup.patch" in log
    compiles = [ln for ln in log.splitlines() if "annoymodule.cc" in ln and " -c " in ln]
    assert compiles and all("-march=native" not in ln for ln in compiles)
    assert all("-march=x86-64-v3" in ln for ln in compiles)
    assert "::cbuild-step:: python 1:" in r.test_log.read_text()
