"""builder.config: cbuild.toml (found upwards, or CBUILD_CONFIG), then CBUILD_*, then flags;
each value keeps its source. Recipe folders are searched in order, the built-in ones last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.config import builtin_recipes, load_config
from builder.errors import ConfigError
from builder.recipes import load_recipe, recipe_path

SITE = """\
wheelhouse = "wh"
recipes = ["site-recipes", "more"]
engine = "docker"
provider = "auto"
jobs = 3
cache = "/scratch/cbuild"
"""


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, {"HOME": str(tmp_path / "home")})
    assert cfg.file is None
    assert cfg.engine.value == "auto" and cfg.engine.source == "default"
    assert cfg.provider.value == "standalone" and cfg.jobs.value is None
    assert cfg.cache.value == tmp_path / "home" / ".cache" / "cbuild"
    assert cfg.recipe_dirs == (builtin_recipes(),)
    assert cfg.new_recipe_dir == Path("recipes").resolve()


def test_file_found_in_a_parent_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "cbuild.toml").write_text(SITE)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    cfg = load_config(deep, {})
    src = str(tmp_path / "cbuild.toml")
    assert cfg.file == tmp_path / "cbuild.toml"
    assert cfg.wheelhouse.value == tmp_path / "wh" and cfg.wheelhouse.source == src
    assert cfg.recipe_dirs == (tmp_path / "site-recipes", tmp_path / "more", builtin_recipes())
    assert cfg.new_recipe_dir == tmp_path / "site-recipes"
    assert (cfg.engine.value, cfg.provider.value, cfg.jobs.value) == ("docker", "auto", 3)
    assert cfg.cache.value == Path("/scratch/cbuild")


def test_env_over_file_flags_over_env(tmp_path: Path) -> None:
    (tmp_path / "cbuild.toml").write_text(SITE)
    env = {"CBUILD_JOBS": "5", "CBUILD_ENGINE": "apptainer", "CBUILD_RECIPES": "/x:/y"}
    cfg = load_config(tmp_path, env)
    assert cfg.jobs.value == 5 and cfg.jobs.source == "CBUILD_JOBS"
    assert cfg.recipes.value == (Path("/x"), Path("/y"))
    flagged = cfg.with_flags(engine="docker", jobs=None, recipes=[tmp_path / "r"], wheelhouse="w")
    assert flagged.engine.value == "docker" and flagged.engine.source == "--engine"
    assert flagged.jobs.value == 5  # a flag left at None keeps the value
    assert flagged.recipe_dirs == (tmp_path / "r", builtin_recipes())
    assert flagged.wheelhouse.value == Path("w").resolve()
    assert cfg.engine.value == "apptainer"  # frozen: with_flags makes a new one


def test_cbuild_config_names_the_file(tmp_path: Path) -> None:
    named = tmp_path / "elsewhere.toml"
    named.write_text('engine = "apptainer"\n')
    (tmp_path / "cbuild.toml").write_text(SITE)
    cfg = load_config(tmp_path, {"CBUILD_CONFIG": str(named)})
    assert cfg.file == named and cfg.engine.value == "apptainer"
    with pytest.raises(ConfigError, match="CBUILD_CONFIG=.*no such file"):
        load_config(tmp_path, {"CBUILD_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jbos = 3\n", "unknown key 'jbos'; did you mean 'jobs'?"),
        ("jobs = 0\n", "jobs must be a whole number >= 1"),
        ("recipes = 3\n", "recipes must be a list of folders"),
        ("wheelhouse = [1]\n", "wheelhouse must be a string"),
        ("engine = \n", "invalid TOML"),
    ],
)
def test_mistakes_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "cbuild.toml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, {})
    assert message in exc.value.message and str(tmp_path / "cbuild.toml") in exc.value.message
    with pytest.raises(ConfigError, match="CBUILD_JOBS='many' is not a number"):
        load_config(tmp_path / "..", {"CBUILD_JOBS": "many"})


def test_site_recipe_first_builtin_last(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "biopython.toml").write_text(
        '[package]\nname = "biopython"\nimport_names = ["Bio", "Bio.Align"]\n'
    )
    dirs = (site, builtin_recipes())
    assert load_recipe("biopython", "1.85", dirs).import_names == ("Bio", "Bio.Align")
    assert recipe_path("annoy", dirs) == builtin_recipes() / "annoy.toml"  # only built in
    assert recipe_path("newpkg", dirs) == site / "newpkg.toml"  # where a new one goes


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CBUILD_")}
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=120,
    )


def test_cli_config_show_and_recipe_new_in_an_empty_folder(tmp_path: Path) -> None:
    res = cli("recipe", "new", "mypkg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "recipes" / "mypkg.toml").is_file()  # not into cbuild's own recipes
    assert not (builtin_recipes() / "mypkg.toml").exists()
    (tmp_path / "cbuild.toml").write_text('recipes = ["site"]\njobs = 2\n')
    assert cli("recipe", "new", "other", cwd=tmp_path).returncode == 0
    assert (tmp_path / "site" / "other.toml").is_file()
    shown = json.loads(
        cli("config", "show", "--json", cwd=tmp_path, env={"CBUILD_JOBS": "4"}).stdout
    )
    assert shown["file"] == str(tmp_path / "cbuild.toml")
    assert shown["jobs"] == {"value": 4, "source": "CBUILD_JOBS"}
    assert shown["recipes"]["value"] == [str(tmp_path / "site"), str(builtin_recipes())]
    assert shown["recipes"]["source"] == str(tmp_path / "cbuild.toml")
    assert shown["engine"] == {"value": "auto", "source": "default"}
    text = cli("config", "show", cwd=tmp_path)
    assert "jobs       2  [" in text.stdout and "recipes" in text.stdout
    (tmp_path / "cbuild.toml").write_text("provder = 'auto'\n")
    bad = cli("config", "show", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'provider'?" in bad.stderr
