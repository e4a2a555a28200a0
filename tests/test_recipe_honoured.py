"""Recipe fields the chosen provider cannot honour ([system] modules and runtime_modules on the
standalone image) and fields no code acts on yet ([build] once, [source] git) are refused with a
message naming the provider, before any container; `recipe check` refuses what no provider
honours. Which keys a provider honours is its own data (`Provider.honours`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import ConfigError
from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.providers import PROVIDERS, get_provider
from builder.recipes import BUILTIN_RECIPES, PROVIDER_KEYS, check_recipe, load_recipe
from builder.targets.model import resolve

HONOURED = frozenset().union(*(make().honours for make in PROVIDERS.values()))


def recipe(folder: Path, body: str, name: str = "pkg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'[package]\nname = "{name}"\nimport_names = ["{name}"]\n\n{body}')
    return path


def run(tmp_path: Path, recipes: Path, target: str = "gentoo2023-generic") -> None:
    req = WheelRequest(
        "pkg", "1.0", tuple(resolve([target])), tmp_path / "wh", tmp_path / "cache", recipes
    )
    Pipeline(None, lambda t, m: None).run(req)  # type: ignore[arg-type]  # refused before use


def test_providers_declare_what_they_honour() -> None:
    assert get_provider("standalone").honours == frozenset()
    assert get_provider("cvmfs").honours == {"system.modules", "system.runtime_modules"}
    assert HONOURED <= PROVIDER_KEYS  # a provider names only keys that exist


@pytest.mark.parametrize("key", ["modules", "runtime_modules"])
def test_standalone_refuses_modules_naming_itself_before_any_container(
    tmp_path: Path, key: str
) -> None:
    recipes = tmp_path / "recipes"
    recipe(recipes, f'[system]\n{key} = ["fftw"]\n')
    with pytest.raises(ConfigError) as exc:
        run(tmp_path, recipes)
    msg = exc.value.message
    assert f"[system] {key} (fftw) is not honoured by the standalone provider" in msg
    assert "gentoo2023-generic" in msg
    assert "--provider cvmfs" in exc.value.fix and "[system] apt" in exc.value.fix
    assert not (tmp_path / "cache").exists()  # nothing fetched, no container


def test_cvmfs_honours_modules_and_apt_gives_the_image_its_own_way(tmp_path: Path) -> None:
    only = recipe(tmp_path, '[system]\nmodules = ["fftw"]\nruntime_modules = ["gsl"]\n')
    r = load_recipe("pkg", "1.0", only.parent)
    cvmfs, standalone = get_provider("cvmfs"), get_provider("standalone")
    assert r.not_honoured("the cvmfs provider", cvmfs.honours) == []
    assert len(r.not_honoured("the standalone provider", standalone.honours)) == 2
    # pyfftw: Debian's libfftw3-dev for the image, the fftw module on the stack.
    pyfftw = load_recipe("pyfftw", "0.15.0", BUILTIN_RECIPES)
    assert pyfftw.modules == ("fftw",) and pyfftw.apt
    assert pyfftw.not_honoured("the standalone provider", standalone.honours) == []


def test_modules_only_for_the_targets_that_load_them(tmp_path: Path) -> None:
    recipe(tmp_path, '[targets."*-x86-64-v4".system]\nmodules = ["fftw"]\n')
    base = load_recipe("pkg", "1.0", tmp_path)
    honours = get_provider("standalone").honours
    (v3,) = resolve(["gentoo2023-x86-64-v3"])
    (v4,) = resolve(["gentoo2023-x86-64-v4"])
    assert base.for_target(v3).not_honoured("the standalone provider", honours) == []
    assert base.for_target(v4).not_honoured("the standalone provider", honours)


def test_build_once_is_refused_at_build_and_by_check(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    path = recipe(recipes, "[build]\nonce = true\n")
    with pytest.raises(ConfigError, match=r"\[build\] once"):
        run(tmp_path, recipes)
    assert check_recipe(path) == []  # the format is right
    (err,) = check_recipe(path, HONOURED)  # what the code supports is not
    assert "[build] once" in err.message and str(path.name) in err.message and err.fix


def test_check_refuses_keys_no_provider_honours(tmp_path: Path) -> None:
    path = recipe(tmp_path, '[system]\nmodules = ["fftw"]\n')
    assert check_recipe(path, HONOURED) == []  # cvmfs loads modules
    (err,) = check_recipe(path, frozenset())  # with no provider that does
    assert "[system] modules (fftw) is not honoured by any provider" in err.message


def test_cli_recipe_check_shipped_recipes_pass_and_once_fails(tmp_path: Path) -> None:
    shipped = CliRunner().invoke(app, ["recipe", "check", str(BUILTIN_RECIPES)])
    assert shipped.exit_code == 0, shipped.output
    bad = CliRunner().invoke(
        app, ["recipe", "check", str(recipe(tmp_path, "[build]\nonce = true\n"))]
    )
    assert bad.exit_code == 2 and "[build] once" in bad.output
