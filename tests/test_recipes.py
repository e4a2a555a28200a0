"""builder.recipes: strict loading, messages that point at the line, version overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.recipes import BUILTIN_RECIPES, Recipe, load_recipe

REPO_RECIPES = BUILTIN_RECIPES  # shipped as package data (builder/data/recipes)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return folder


def _error(folder: Path, name: str = "pkg", version: str = "1.0") -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_recipe(name, version, folder)
    return exc.value


def test_biopython_recipe_loads() -> None:
    r = load_recipe("biopython", "1.85", REPO_RECIPES)
    assert r.name == "biopython"
    assert r.import_names == ("Bio",)
    assert r.test_requires == ("numpy",)
    assert 3 <= len(r.test_commands) <= 4
    assert all(c.startswith("python -c ") for c in r.test_commands)
    assert r.path == REPO_RECIPES / "biopython.toml"


def test_every_repo_recipe_loads() -> None:
    for path in REPO_RECIPES.glob("*.toml"):
        assert load_recipe(path.stem, "1.0", REPO_RECIPES).name == path.stem


def test_missing_recipe_gives_defaults(tmp_path: Path) -> None:
    r = load_recipe("Some_Package", "2.0", tmp_path)
    assert r == Recipe(name="some-package", version="2.0")
    assert r.import_names is None  # derived from the wheel later
    assert (r.build_requires, r.env, r.test_requires, r.test_commands) == ((), {}, (), ())


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(
        tmp_path / "recipes",
        "biopython",
        '# comment\n\n[package]\nname = "biopython"\n\n# the line below is 7\n'
        'import_name = ["Bio"]\n',
    )
    err = _error(Path("recipes"), "biopython")
    assert err.message == (
        "recipes/biopython.toml:7: unknown key 'import_name' in [package]; "
        "did you mean 'import_names'?"
    )
    assert "import_names" in (err.fix or "")


def test_unknown_key_in_override_and_unknown_section(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "pkg",
        '[package]\nname = "pkg"\n\n[versions."<2".test]\nrequires = []\ncommand = ["true"]\n',
    )
    err = _error(tmp_path)
    assert err.message.endswith(
        """pkg.toml:6: unknown key 'command' in [versions."<2".test]; did you mean 'commands'?"""
    )

    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n[tset]\nrequires = []\n')
    err = _error(tmp_path)
    assert err.message.endswith(
        "pkg.toml:3: unknown key 'tset' at the top level; did you mean 'test'?"
    )


def test_dotted_key_is_found_on_its_line(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n\nbuild.requires = ["a"]\nbuild.envv = {}\n')
    # Dotted keys under [package] make build a subtable of package: unknown key 'build'.
    assert _error(tmp_path).message.endswith(":4: unknown key 'build' in [package]")

    _write(tmp_path, "pkg", 'package.name = "pkg"\nbuild.requires = ["a"]\nbuild.envv = {}\n')
    assert _error(tmp_path).message.endswith(
        ":3: unknown key 'envv' in [build]; did you mean 'env'?"
    )


def test_wrong_types_name_key_and_type(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\nimport_names = "pkg"\n')
    assert _error(tmp_path).message.endswith(
        ":3: 'import_names' in [package] must be a list of strings, not a string"
    )
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n[build]\nenv = { CFLAGS = 3 }\n')
    assert _error(tmp_path).message.endswith(
        ":4: env.CFLAGS in [build] must be a string, not a int"
    )
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\ntest = 1\n')
    assert "unknown key 'test' in [package]" in _error(tmp_path).message
    _write(tmp_path, "pkg", 'package = "pkg"\n')
    assert _error(tmp_path).message.endswith(":1: 'package' must be a table, not a string")


def test_import_names_are_module_names(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\nimport_names = ["Bio.Align", "2x"]\n')
    assert "'2x' in [package] import_names is not a Python module name" in _error(tmp_path).message
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\nimport_names = []\n')
    assert load_recipe("pkg", "1.0", tmp_path).import_names == ()  # no import test


def test_name_must_match_file(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "other"\n')
    err = _error(tmp_path)
    assert "pkg.toml:2: [package] name 'other' does not match the file name" in err.message
    _write(tmp_path, "pkg", '[test]\nrequires = ["numpy"]\n')
    assert "missing [package] name" in _error(tmp_path).message
    _write(tmp_path, "my-pkg", '[package]\nname = "My_Pkg"\n')
    assert load_recipe("my.pkg", "1.0", tmp_path).name == "my-pkg"


def test_bad_requirement(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n\n[test]\nrequires = ["numpy", "scipy>="]\n')
    err = _error(tmp_path)
    assert err.message.startswith(f"{tmp_path / 'pkg.toml'}:5: invalid requirement 'scipy>='")
    assert "[test] requires" in err.message
    assert "PEP 508" in (err.fix or "")


def test_bad_specifier_even_when_not_matching(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n\n[versions."1.80".build]\nrequires = []\n')
    err = _error(tmp_path, version="9.0")
    assert err.message.endswith(":4: invalid version specifier '1.80' in [versions]")
    assert "==1.80" in (err.fix or "")


def test_version_overrides_merge_key_by_key_later_wins(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "pkg",
        """
[package]
name = "pkg"
import_names = ["pkg"]

[build]
requires = ["cython>=3"]
env = { A = "1", B = "1" }

[test]
requires = ["numpy"]
commands = ["python -c 'import pkg'"]

[versions."<2".build]
requires = ["cython<3"]
env = { B = "2" }

[versions."<2".test]
requires = ["numpy<2"]

[versions."<1.5"]
test.requires = ["numpy<1.20"]
package.import_names = ["oldpkg"]
""",
    )
    new = load_recipe("pkg", "2.1", tmp_path)
    assert new.build_requires == ("cython>=3",)
    assert new.env == {"A": "1", "B": "1"}
    assert new.test_requires == ("numpy",)

    mid = load_recipe("pkg", "1.9", tmp_path)
    assert mid.build_requires == ("cython<3",)
    assert mid.env == {"A": "1", "B": "2"}  # env merges per variable
    assert mid.test_requires == ("numpy<2",)
    assert mid.test_commands == ("python -c 'import pkg'",)  # untouched keys are kept
    assert mid.import_names == ("pkg",)

    old = load_recipe("pkg", "1.4", tmp_path)
    assert old.test_requires == ("numpy<1.20",)  # the later matching table wins
    assert old.build_requires == ("cython<3",)
    assert old.import_names == ("oldpkg",)

    assert load_recipe("pkg", "1.5rc1", tmp_path).test_requires == ("numpy<2",)


def test_name_cannot_be_overridden(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\n[versions.">1".package]\nname = "x"\n')
    assert "[package] name cannot be overridden per version" in _error(tmp_path).message


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    _write(tmp_path, "pkg", '[package]\nname = "pkg"\nimport_names = ["a",\n\n[build\n')
    err = _error(tmp_path)
    assert err.message.startswith(f"{tmp_path / 'pkg.toml'}:5: invalid TOML: ")


def test_bad_version_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid version"):
        load_recipe("pkg", "latest", tmp_path)
