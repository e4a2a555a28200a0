"""builder.recipes, the full format: every section, target and accelerator overrides, the
mistakes `cbuild recipe check` must catch (with file, line and a fix), the generated schema, and
the `recipe` commands through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from builder.data import data_path
from builder.errors import ConfigError
from builder.recipes import (
    BUILTIN_RECIPES,
    Source,
    check_recipe,
    load_recipe,
    new_recipe_text,
    read_recipe,
    schema,
    schema_text,
    to_toml,
)
from builder.targets.model import resolve
from tests.conftest import FIXTURE_RECIPE

FIXTURE_RECIPES = FIXTURE_RECIPE.parent

REPO = Path(__file__).resolve().parent.parent
SHA = "ab" * 32

FULL = f"""\
[package]
name = "pkg"
import_names = ["pkg", "pkg.sub"]
pythons = ">=3.10"

[source]
url = "https://example.org/Pkg-{{version}}.tar.gz"
sha256 = "{SHA}"
filename = "Pkg-{{version}}.tar.gz"
folder = "Pkg-{{version}}"

[build]
requires = ["cython>=3"]
env = {{ A = "1", B = "1" }}
patches = ["one.patch", "two.patch"]
pre_build = ["sed -i s/x/y/ setup.py", "export PKG_VERSION=$VERSION"]
post_build = ["unzip -l $WHEEL"]
config_settings = {{ "--build-option" = ["--cpp_ext", "--omp"], "setup-args" = "-Dx=y" }}
once = false

[system]
apt = ["libfftw3-dev"]
modules = ["fftw/3.3.10"]
runtime_modules = ["hdf5"]

[test]
requires = ["numpy"]
pre_commands = ["ulimit -s 8192"]
python = ["assert pkg.version"]
commands = ["pkg-cli --help"]

[wheel]
add_requires = ["packaging"]
remove_requires = ["nvidia-*"]
update_requires = ["torch->torch-cpu", "numpy<2"]
suffix = "-gpu"
local_tags = ["torch27"]
rpath = ["/opt/lib"]
rpath_origin = true

[versions."<2".build]
env = {{ B = "2" }}
config_settings = {{ "setup-args" = "-Dold=true" }}

[versions."<2".targets."*-x86-64-v4".build]
requires = ["cython<3"]

[accelerators."cuda*".wheel]
suffix = "-cuda"

[targets."gentoo2023-*".system]
apt = ["libfftw3-dev", "libopenblas-dev"]

[targets."!gentoo2023-*".system]
apt = ["never"]
"""


def write(folder: Path, text: str, name: str = "pkg", patches: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patches").mkdir(exist_ok=True)
    for p in patches:
        (folder / "patches" / p).write_text("--- a/x\n+++ b/x\n")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def error(path: Path, version: str = "1.0") -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        read_recipe(path, version)
    return exc.value


@pytest.fixture
def full(tmp_path: Path) -> Path:
    return write(tmp_path, FULL, patches=("one.patch", "two.patch"))


def test_every_field_resolves(full: Path) -> None:
    r = read_recipe(full, "2.1")
    assert r.import_names == ("pkg", "pkg.sub")
    assert r.pythons == ">=3.10" and r.builds_for_python("3.11") and not r.builds_for_python("3.9")
    assert r.source == Source(
        kind="url",
        url="https://example.org/Pkg-2.1.tar.gz",
        sha256=SHA,
        filename="Pkg-2.1.tar.gz",
        folder="Pkg-2.1",
    )
    assert r.build_requires == ("cython>=3",)
    assert r.env == {"A": "1", "B": "1"}
    assert r.patch_files == (full.parent / "patches/one.patch", full.parent / "patches/two.patch")
    assert r.pre_build == ("sed -i s/x/y/ setup.py", "export PKG_VERSION=$VERSION")
    assert r.post_build == ("unzip -l $WHEEL",)
    assert r.pip_args == (
        "--config-settings=--build-option=--cpp_ext",
        "--config-settings=--build-option=--omp",
        "--config-settings=setup-args=-Dx=y",
    )
    assert (r.apt, r.modules, r.runtime_modules) == (
        ("libfftw3-dev",),
        ("fftw/3.3.10",),
        ("hdf5",),
    )
    assert (r.test_requires, r.test_pre_commands, r.test_python, r.test_commands) == (
        ("numpy",),
        ("ulimit -s 8192",),
        ("assert pkg.version",),
        ("pkg-cli --help",),
    )
    assert r.add_requires == ("packaging",)
    assert r.remove_requires == ("nvidia-*",)
    assert r.update_requires == ("torch->torch-cpu", "numpy<2")
    assert (r.suffix, r.local_tags, r.rpath, r.rpath_origin) == (
        "-gpu",
        ("torch27",),
        ("/opt/lib",),
        True,
    )
    assert r.target is None and not r.build_once and r.wheel_edits


def test_version_target_and_accelerator_overrides(full: Path) -> None:
    old = read_recipe(full, "1.5")
    assert old.env == {"A": "1", "B": "2"}  # per variable
    assert dict(old.config_settings)["setup-args"] == "-Dold=true"  # per setting
    assert dict(old.config_settings)["--build-option"] == "--omp"  # the others kept
    # Without a target only the common part applies.
    assert old.build_requires == ("cython>=3",) and old.apt == ("libfftw3-dev",)

    v4, v3 = resolve(["gentoo2023-x86-64-v4", "gentoo2023-x86-64-v3"])
    old_v4 = old.for_target(v4)
    assert old_v4.target == "gentoo2023-x86-64-v4"
    assert old_v4.build_requires == ("cython<3",)  # nested [versions.X.targets.Y]
    assert old_v4.apt == ("libfftw3-dev", "libopenblas-dev")  # the glob matches, "!" does not
    assert old.for_target(v3).build_requires == ("cython>=3",)
    assert read_recipe(full, "2.0").for_target(v4).build_requires == ("cython>=3",)
    assert load_recipe("pkg", "1.5", full.parent, v4) == old_v4

    class Cuda:
        id, accelerator, python = "gentoo2023-x86-64-v3-cuda12", "cuda12", "3.11"

    assert old.for_target(Cuda()).suffix == "-cuda"
    assert old.for_target(v3).suffix == "-gpu"


def test_no_recipe_for_target_is_the_defaults(tmp_path: Path) -> None:
    (v3,) = resolve(["gentoo2023-x86-64-v3"])
    r = load_recipe("numpy", "2.0", tmp_path, v3)
    assert r.target == v3.id and r.import_names is None and r.pip_args == ()


def test_show_dict_is_the_file_shape_and_round_trips_through_toml(full: Path) -> None:
    r = read_recipe(full, "2.1")
    data = r.as_dict()
    assert data.pop("resolved_for") == {"version": "2.1", "target": None}
    assert data["build"]["config_settings"] == {
        "--build-option": ["--cpp_ext", "--omp"],
        "setup-args": "-Dx=y",
    }
    again = write(full.parent / "again", to_toml(data), patches=("one.patch", "two.patch"))
    assert tomllib.loads(again.read_text()) == data
    # The templates were resolved for 2.1 in `data`; resolved again, the same recipe.
    assert read_recipe(again, "2.1").as_dict() == read_recipe(full, "2.1").as_dict()


def test_to_toml_writes_commands_readably() -> None:
    text = to_toml(
        {
            "package": {"name": "x", "import_names": []},
            "build": {"pre_build": ["export A=1\ncd python\n", 'sed -i "s/a/b/" setup.py']},
        },
        comments={"build": ["converted from x.sh"]},
    )
    assert "# converted from x.sh\n[build]" in text
    assert "'sed -i \"s/a/b/\" setup.py'" in text
    assert "'''\nexport A=1\ncd python\n'''" in text
    assert tomllib.loads(text)["build"]["pre_build"][0] == "export A=1\ncd python\n"


# --- mistakes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[package]\nname = "pkg"\n[wheel]\nremove_require = ["a"]\n',
            "pkg.toml:4: unknown key 'remove_require' in [wheel]; did you mean 'remove_requires'?",
        ),
        (
            '[package]\nname = "pkg"\n[system]\napt_packages = ["a"]\n',
            "pkg.toml:4: unknown key 'apt_packages' in [system]; did you mean 'apt'?",
        ),
        (
            '[package]\nname = "pkg"\n\n[targets."*-v4".biuld]\nrequires = []\n',
            """pkg.toml:4: unknown key 'biuld' in [targets."*-v4"]; did you mean 'build'?""",
        ),
        (
            '[package]\nname = "pkg"\n[target."x"]\n',
            "pkg.toml:3: unknown key 'target' at the top level; did you mean 'targets'?",
        ),
        (
            '[package]\nname = "pkg"\n[build]\npatches = ["nope.patch"]\n',
            "pkg.toml:4: patch 'nope.patch' in [build] patches not found: ",
        ),
        (
            '[package]\nname = "pkg"\npythons = ">=3.10,<"\n',
            "pkg.toml:3: invalid version specifier '>=3.10,<' in [package] pythons",
        ),
        (
            '[package]\nname = "pkg"\n[versions."1.2"]\nbuild.requires = []\n',
            "pkg.toml:3: invalid version specifier '1.2' in [versions]",
        ),
        (
            '[package]\nname = "pkg"\n[wheel]\nadd_requires = ["torch=>2"]\n',
            "pkg.toml:4: invalid requirement 'torch=>2' in [wheel] add_requires: ",
        ),
        (
            '[package]\nname = "pkg"\n[wheel]\nupdate_requires = ["torch->torch cpu"]\n',
            "pkg.toml:4: invalid requirement 'torch cpu' in [wheel] update_requires: ",
        ),
        (
            '[package]\nname = "pkg"\nimport_names = ["pkg", ""]\n',
            "pkg.toml:3: empty import name in [package] import_names",
        ),
        (
            '[package]\nname = "pkg"\nimport_names = []\n\n[test]\npython = ["pkg.run()"]\n',
            "pkg.toml:6: [test] python runs after importing import_names, but import_names is "
            "empty",
        ),
        (
            '[package]\nname = "pkg"\n[source]\nurl = "https://x.org/a-{version}.tgz"\n',
            "pkg.toml:4: [source] url needs sha256",
        ),
        (
            '[package]\nname = "pkg"\n[source]\ngit = "https://github.com/a/b"\nurl = "https://x"\n',
            "pkg.toml:5: [source] git and url exclude each other",
        ),
        (
            '[package]\nname = "pkg"\n[source]\ngit = "https://github.com/a/b"\nrev = "v{ver}"\n',
            "pkg.toml:5: unknown placeholder {ver} in [source] rev",
        ),
        (
            '[package]\nname = "pkg"\n[source]\nurl = "https://x/a.tgz"\nsha256 = "abc"\n',
            "pkg.toml:5: sha256 in [source] must be 64 hex digits, not 'abc'",
        ),
        (
            '[package]\nname = "pkg"\n[targets."gentoo 2023"]\n',
            "pkg.toml:3: 'gentoo 2023' in [targets] is not a target id pattern",
        ),
        (
            '[package]\nname = "pkg"\n[wheel]\nlocal_tags = ["torch-2.7"]\n',
            "pkg.toml:4: local tag 'torch-2.7' in [wheel] must be letters and digits",
        ),
        (
            '[package]\nname = "pkg"\n[build]\nconfig_settings = { a = 1 }\n',
            "pkg.toml:4: config_settings.a in [build] must be a string or a list of strings",
        ),
        (
            '[package]\nname = "pkg"\n[accelerators.cuda12.package]\nname = "x"\n',
            "pkg.toml:4: [package] name cannot be overridden per version or target",
        ),
    ],
)
def test_mistakes_name_file_line_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    err = error(path)
    assert message in err.message, err.message
    assert err.message.startswith(f"{path}:")
    errors = check_recipe(path)
    assert len(errors) == 1 and message in errors[0].message
    assert errors[0].line == int(message.split(":")[1])


def test_fixes_are_actionable(tmp_path: Path) -> None:
    path = write(tmp_path, '[package]\nname = "pkg"\n[build]\npatches = ["nope.patch"]\n')
    assert "add the file to" in (error(path).fix or "")
    path = write(tmp_path, '[package]\nname = "pkg"\nimport_names = []\n[test]\npython = ["x"]\n')
    assert "import_names" in (error(path).fix or "")


def test_check_reports_every_mistake_of_a_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[package]\nname = "pkg"\nimport_name = ["x"]\n[build]\nrequires = ["a>="]\n'
        'patches = ["gone.patch"]\n[versions."x"]\n',
    )
    lines = [e.line for e in check_recipe(path)]
    assert lines == [3, 5, 6, 7]
    assert len(error(path).message.splitlines()) >= 4  # load_recipe reports them all too


def test_override_mistakes_are_found_even_when_not_matching(tmp_path: Path) -> None:
    # import_names = [] only under v4: the empty-import mistake shows in check, whatever version.
    path = write(
        tmp_path,
        '[package]\nname = "pkg"\n[test]\npython = ["pkg.x"]\n'
        '[targets."*-v4".package]\nimport_names = []\n',
    )
    read_recipe(path, "1.0")  # without a target the override does not apply
    (err,) = check_recipe(path)
    assert "import_names is empty" in err.message


def test_repo_recipes_check_clean() -> None:
    from builder.providers import PROVIDERS

    honoured = frozenset().union(*(make().honours for make in PROVIDERS.values()))
    for path in sorted(BUILTIN_RECIPES.glob("*.toml")):
        assert check_recipe(path) == [], path
        assert check_recipe(path, honoured) == [], path  # what the code supports, too


# --- schema -------------------------------------------------------------------------------------


def test_committed_schema_is_generated_from_the_model() -> None:
    committed = data_path("recipe.schema.json")
    assert committed.read_text() == schema_text(), "run `cbuild recipe schema`"


def test_schema_accepts_repo_recipes_and_rejects_unknown_keys(full: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema())
    jsonschema.Draft202012Validator.check_schema(schema())
    for path in [full, *BUILTIN_RECIPES.glob("*.toml")]:
        assert list(validator.iter_errors(tomllib.loads(path.read_text()))) == [], path
    bad = {"package": {"name": "x"}, "versions": {"<2": {"test": {"command": []}}}}
    assert [e.message for e in validator.iter_errors(bad)] == [
        "Additional properties are not allowed ('command' was unexpected)"
    ]
    assert list(validator.iter_errors({"build": {}}))  # [package] is required


# --- CLI ----------------------------------------------------------------------------------------


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=120,
    )


def test_cli_check_exit_codes_and_json(tmp_path: Path, full: Path) -> None:
    ok = cli("recipe", "check")
    assert ok.returncode == 0, ok.stderr
    assert "biopython.toml" in ok.stdout and "no mistakes" in ok.stderr

    bad = write(tmp_path / "bad", '[package]\nname = "pkg"\n[tset]\n')
    res = cli("recipe", "check", str(full), str(bad.parent))
    assert res.returncode == 2
    # Escaped for rich: the table names survive in the message.
    assert f"{bad}:3: unknown key 'tset' at the top level; did you mean 'test'?" in res.stderr
    # `full` sets every key; with `once = true`, one cbuild does not act on yet: `recipe check`
    # checks what the code supports, so that is a mistake there (and not in the format).
    honoured = frozenset({"system.modules", "system.runtime_modules"})
    assert check_recipe(full) == [] and check_recipe(full, honoured) == []
    full.write_text(full.read_text().replace("once = false", "once = true"))
    assert check_recipe(full) == []
    gaps = check_recipe(full, honoured)
    assert len(gaps) == 1 and "[build] once: " in gaps[0].message
    res = cli("recipe", "check", str(full), str(bad.parent))
    assert f"{len(gaps) + 1} mistake(s) in 2" in res.stderr

    res = cli("recipe", "check", "--json", str(full), str(bad))
    assert res.returncode == 2
    report = json.loads(res.stdout)
    assert [r["ok"] for r in report] == [False, False]
    assert [e["message"] for e in report[0]["errors"]] == [e.message for e in gaps]
    assert report[1]["errors"][0]["line"] == 3
    assert "valid keys at the top level" in report[1]["errors"][0]["fix"]

    assert cli("recipe", "check", str(tmp_path / "missing.toml")).returncode == 2


def test_cli_new_writes_a_recipe_that_checks(tmp_path: Path) -> None:
    res = cli("recipe", "new", "My.Package", "--recipes", str(tmp_path))
    assert res.returncode == 0, res.stderr
    path = tmp_path / "my-package.toml"
    assert res.stdout.strip() == str(path)
    assert check_recipe(path) == []
    r = read_recipe(path, "1.0")
    assert r.import_names == ("My_Package",)
    assert cli("recipe", "new", "my-package", "--recipes", str(tmp_path)).returncode == 2
    assert "pythons" in new_recipe_text("x")


def test_cli_show_resolves_for_a_target(full: Path) -> None:
    args = ("recipe", "show", "pkg", "1.5", "--recipes", str(full.parent))
    res = cli(*args, "--target", "gentoo2023-x86-64-v4", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["resolved_for"] == {"version": "1.5", "target": "gentoo2023-x86-64-v4"}
    assert data["build"]["requires"] == ["cython<3"]
    assert data["source"]["url"] == "https://example.org/Pkg-1.5.tar.gz"
    text = cli(*args).stdout
    assert text.startswith("# pkg 1.5 for any target, from ")
    assert tomllib.loads(text)["build"]["requires"] == ["cython>=3"]
    res = cli(*args, "--target", "nope")
    assert res.returncode == 2 and "unknown target id 'nope'" in res.stderr


def test_cli_schema_check(tmp_path: Path) -> None:
    assert cli("recipe", "schema", "--check").returncode == 0  # the shipped copy
    printed = cli("recipe", "schema", cwd=tmp_path)  # nothing written anywhere
    assert json.loads(printed.stdout) == schema() and list(tmp_path.iterdir()) == []
    out = tmp_path / "s.json"
    assert cli("recipe", "schema", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text()) == schema()
    out.write_text("{}")
    assert cli("recipe", "schema", "--check", "--out", str(out)).returncode == 1


# --- what the build does not do yet ---------------------------------------------------------------


def _once_recipe(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oncepkg.toml").write_text('[package]\nname = "oncepkg"\n\n[build]\nonce = true\n')
    return folder


def test_fields_the_build_does_not_act_on_are_named(tmp_path: Path) -> None:
    repo = BUILTIN_RECIPES
    assert load_recipe("annoy", "1.17.3", repo).not_built_yet() == []
    assert load_recipe("dtreeviz", "1.3.7", repo).not_built_yet() == []
    assert load_recipe("pyfftw", "0.15.0", repo).not_built_yet() == []  # apt: its own image
    # [source] git is fetched (builder.sources.git)
    assert load_recipe("pytorch3d", "0.7.8", FIXTURE_RECIPES).not_built_yet() == []
    (gap,) = load_recipe("oncepkg", "1.0", _once_recipe(tmp_path)).not_built_yet()
    assert gap.startswith("[build] once: ")


def test_the_pipeline_refuses_such_a_recipe_before_any_container(tmp_path: Path) -> None:
    from builder.pipeline.job import Pipeline
    from builder.pipeline.model import WheelRequest

    req = WheelRequest(
        "oncepkg",
        "1.0",
        tuple(resolve(["gentoo2023-generic"])),
        tmp_path / "wheelhouse",
        tmp_path / "cache",
        _once_recipe(tmp_path / "recipes"),
    )
    # No engine: the refusal comes before anything would use one.
    with pytest.raises(ConfigError, match=r"\[build\] once"):
        Pipeline(None, lambda t, m: None).run(req)  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists()
