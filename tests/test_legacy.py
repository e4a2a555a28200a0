"""builder.recipes.legacy:
legacy shell configs -> recipes. Each legacy variable converts to its field;
conditions on the stack year and the version become override tables; what cannot convert is
listed with its line and reason. The sample configs are in tests/fixtures/legacy/config/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.recipes import check_recipe, read_recipe, to_toml
from builder.recipes.legacy import LEGACY_VARIABLES, convert, import_configs, package_of
from builder.targets.model import resolve

REPO = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).parent / "fixtures" / "legacy"
CONFIGS = sorted((LEGACY / "config").glob("*.sh"))


def conv(tmp_path: Path, text: str, name: str = "pkg") -> tuple[dict, list[tuple[int, str]]]:
    """Convert `text` as config/<name>.sh; (recipe data, [(line, reason)] not converted)."""
    (tmp_path / "config").mkdir(exist_ok=True)
    path = tmp_path / "config" / f"{name}.sh"
    path.write_text(text)
    data, c = convert(path, LEGACY / "patches")
    return data, [(s.line, s.reason) for s in c.skipped]


def test_the_samples_set_every_legacy_variable() -> None:
    text = "\n".join(p.read_text() for p in CONFIGS)
    unset = [v for v in LEGACY_VARIABLES if not re.search(rf"^\s*(export )?{v}=", text, re.M)]
    assert unset == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('PYTHON_DEPS="numpy>=1.21 cython<3"', {"build": {"requires": ["numpy>=1.21", "cython<3"]},
                                               "test": {"requires": ["numpy>=1.21", "cython<3"]}}),
        ('MODULE_BUILD_DEPS="gcc fftw/3.3.10"', {"system": {"modules": ["gcc", "fftw/3.3.10"]}}),
        ("MODULE_RUNTIME_DEPS=openmpi", {"system": {"runtime_modules": ["openmpi"]}}),
        ('PACKAGE_DOWNLOAD_ARGUMENT="PyPrismatic==$VERSION"',
         {"source": {"pypi_name": "PyPrismatic"}}),
        ('PACKAGE_DOWNLOAD_NAME="Pkg-$VERSION.zip"', {"source": {"filename": "Pkg-{version}.zip"}}),
        ('PACKAGE_DOWNLOAD_METHOD="pip download"', {}),
        ('PACKAGE_FOLDER_NAME="Pkg-${VERSION}"', {"source": {"folder": "Pkg-{version}"}}),
        ('PATCHES="isafixture-note.patch"', {"build": {"patches": ["isafixture-note.patch"]}}),
        ("PRE_BUILD_COMMANDS='export A=1; export B=\"x y\"; sed -i s/a/b/ setup.py; export C=$D'",
         {"build": {"env": {"A": "1", "B": "x y"},
                    "pre_build": ["sed -i s/a/b/ setup.py\nexport C=$D"]}}),
        ('BDIST_WHEEL_ARGS="--enable-gpu --jobs=2"',
         {"build": {"config_settings": {"--build-option": ["--enable-gpu", "--jobs=2"]}}}),
        ("PIP_WHEEL_ARGS='-C setup-args=-Da=1 --config-settings=builddir=b'",
         {"build": {"config_settings": {"setup-args": "-Da=1", "builddir": "b"}}}),
        ('POST_BUILD_COMMANDS="auditwheel show \\$WHEEL_NAME"',
         {"build": {"post_build": ["auditwheel show $WHEEL"]}}),
        ("UPDATE_REQUIREMENTS=\"'torch (~=2.7.0)' numpy->numpy-lite\"",
         {"wheel": {"update_requires": ["torch (~=2.7.0)", "numpy->numpy-lite"]}}),
        ('RPATH_TO_ADD="/opt/a/lib:/opt/b/lib"',
         {"wheel": {"rpath": ["/opt/a/lib", "/opt/b/lib"]}}),
        ("RPATH_ADD_ORIGIN=1", {"wheel": {"rpath_origin": True}}),
        ('PYTHON_IMPORT_NAME="Bio"', {"package": {"import_names": ["Bio"]}}),
        ('PYTHON_IMPORT_NAME=""', {"package": {"import_names": []}}),
        # build_wheel.sh's default modules keep pytest loaded for the test: a requirement here.
        ('PYTHON_TESTS="Bio.test()"', {"test": {"python": ["Bio.test()"], "requires": ["pytest"]}}),
        ("TEST_COMMAND='pytest --pyargs pkg'",
         {"test": {"commands": ["pytest --pyargs pkg"], "requires": ["pytest"]},
          "package": {"import_names": []}}),
        ('PRE_TEST_COMMANDS="ulimit -s 8192"', {"test": {"pre_commands": ["ulimit -s 8192"]}}),
        ('PACKAGE_SUFFIX="-gpu"', {"wheel": {"suffix": "-gpu"}}),
        ('PYTHON_VERSIONS="python/3.11 python/3.12"', {"package": {"pythons": ">=3.11,<3.13"}}),
        ("PATCH_WHEEL_COMMANDS='manipulate_wheels.py --inplace -w $ARCHNAME -r torch "
         "-a \"torch-cpu\"'",
         {"wheel": {"remove_requires": ["torch"], "add_requires": ["torch-cpu"]}}),
        ('PACKAGE_DOWNLOAD_METHOD="Git"\nPACKAGE_DOWNLOAD_ARGUMENT="https://github.com/a/pkg"\n'
         'PACKAGE_DOWNLOAD_CMD="git clone --depth 1 $PACKAGE_DOWNLOAD_ARGUMENT --branch '
         'v${VERSION:?version required} $PACKAGE_FOLDER_NAME"\n'
         'POST_DOWNLOAD_COMMANDS="tar -zcf ${PACKAGE}-${VERSION}.tar.gz $PACKAGE_FOLDER_NAME"',
         {"source": {"git": "https://github.com/a/pkg", "rev": "v{version}"}}),
        ("export OMP_NUM_THREADS=1", {"build": {"env": {"OMP_NUM_THREADS": "1"}}}),
    ],
)  # fmt: skip
def test_each_variable_converts_to_its_field(tmp_path: Path, text: str, expected: dict) -> None:
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    assert {k: v for k, v in data.items() if k != "package"} | (
        {"package": {k: v for k, v in data["package"].items() if k != "name"}}
        if len(data["package"]) > 1
        else {}
    ) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("PRE_DOWNLOAD_COMMANDS='module load x'", "runs on the build node before the download"),
        ('POST_DOWNLOAD_COMMANDS="rm -rf docs"', "shell on the downloaded archive"),
        ("PACKAGE_DOWNLOAD_CMD='curl -O x'", "a download command cbuild does not run"),
        ('PACKAGE_DOWNLOAD_ARGUMENT="https://x.org/pkg-$VERSION.tgz"', "needs its sha256"),
        (
            'PATCH_WHEEL_COMMANDS="unzip \\$ARCHNAME; zip \\$ARCHNAME x"',
            "shell on the wheel archive",
        ),
        ('POST_BUILD_COMMANDS="setrpaths.sh --path $WHEEL_NAME"', "$WHEEL_NAME is empty when bash"),
        ('PRE_BUILD_COMMANDS="cd $(ls -d src)"', "a command substitution that bash ran"),
        ('PYTHON_TESTS="x.test(${SLURM_CPUS_PER_TASK:-1})"', "uses $SLURM_CPUS_PER_TASK"),
        ('PATCHES="missing.patch"', "patch file missing.patch not found"),
        ('PYTHON_DEPS="torch${TORCH_VERSION/./}"', "is shell logic"),
        ('PYTHON_DEPS="numpy==$NUMPY_VERSION"', "uses $NUMPY_VERSION, which bash expanded"),
        ("PYTHON_DEPS=$(cat deps.txt)", "command substitution"),
        ('PYTHON_DEPS="numpy>="', "'numpy>=' is not a requirement"),
        ("PIP_WHEEL_ARGS='--no-use-pep517'", "pip option '--no-use-pep517' has no recipe field"),
        ('PYTHON_VERSIONS="python/2.7 pypy"', "not a list of python/3.X modules"),
        ("exit 1", "`exit` ends the legacy build script"),
        ("source $SCRIPT_DIR/config/common.sh", "calls another script"),
        ("$SCRIPT_DIR/helper.sh --x", "calls another script"),
        ("for f in a b; do\n  sed -i s/a/b/ $f\ndone", "shell control flow (for)"),
        ("patch_it() {\n  true\n}", "shell control flow"),
        ("rm -rf build", "arbitrary shell at the top level"),
        ("make || true", "shell logic (| or ||)"),
        ("PACKAGE=other", "PACKAGE= changes what build_wheel.sh builds"),
        ("RECURSIVE=0", "RECURSIVE= decides whether build_wheel.sh builds the dependencies"),
        ("CUDA_VISIBLE_DEVICES=0", "the build node may have exported it"),
        ('MODULE_BUILD_DEPS=="gcc fftw"', "'=gcc' is not a module name"),
        ('PYTHON_TESTS="x.run()"\nTEST_COMMAND="pytest"', "never ran: TEST_COMMAND replaces"),
    ],
)
def test_what_does_not_convert_is_listed_with_a_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    _, skipped = conv(tmp_path, text)
    assert len(skipped) == 1, skipped
    assert skipped[0][0] == 1 and reason in skipped[0][1]


def test_stack_year_conditions_become_target_overrides(tmp_path: Path) -> None:
    data, skipped = conv(
        tmp_path,
        'PYTHON_DEPS="numpy"\n'
        "if [[ $EBVERSIONGENTOO == 2023 ]]; then\n"
        '    PYTHON_DEPS="$PYTHON_DEPS setuptools<70"\n'
        'elif [[ "${EBVERSIONGENTOO}" == "2026" ]]\nthen\n'
        '    MODULE_BUILD_DEPS="cython/3"\n'
        "else\n"
        '    PACKAGE_SUFFIX="-old"\n'
        "fi\n"
        "if [ $EBVERSIONGENTOO != 2020 ]; then RPATH_ADD_ORIGIN=1; fi\n",
    )
    assert skipped == []
    targets = data["targets"]
    # The earlier value comes first, as `$PYTHON_DEPS x` appends in the shell.
    assert targets["gentoo2023-*"]["build"]["requires"] == ["numpy", "setuptools<70"]
    assert targets["gentoo2026-*"]["system"]["modules"] == ["cython/3"]  # implied: not 2023
    assert targets["!gentoo2023-*"]["targets"]["!gentoo2026-*"]["wheel"]["suffix"] == "-old"
    assert targets["!gentoo2020-*"]["wheel"]["rpath_origin"] is True


def test_version_conditions_become_version_overrides_and_nest(tmp_path: Path) -> None:
    text = (
        'if [[ "$VERSION" == "1.2.2" ]]; then\n'
        '  MODULE_RUNTIME_DEPS="scipy-stack/2020b"\n'
        "elif [[ $VERSION == 1.3.* ]]; then\n"
        "  if [[ $EBVERSIONGENTOO == 2023 ]]; then\n"
        '    PYTHON_DEPS="numpy<2"\n'
        "  fi\n"
        "else\n"
        '  PYTHON_IMPORT_NAME="new"\n'
        "fi\n"
    )
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    versions = data["versions"]
    assert versions["==1.2.2"]["system"]["runtime_modules"] == ["scipy-stack/2020b"]
    assert versions["!=1.2.2,==1.3.*"]["targets"]["gentoo2023-*"]["build"]["requires"] == [
        "numpy<2"
    ]
    assert versions["!=1.2.2,!=1.3.*"]["package"]["import_names"] == ["new"]
    # And the recipe means what the shell meant.
    (tmp_path / "pkg.toml").write_text(to_toml(data))
    (v3,) = resolve(["gentoo2023-x86-64-v3"])
    assert read_recipe(tmp_path / "pkg.toml", "1.2.2").runtime_modules == ("scipy-stack/2020b",)
    assert read_recipe(tmp_path / "pkg.toml", "1.3.4").for_target(v3).build_requires == ("numpy<2",)
    assert read_recipe(tmp_path / "pkg.toml", "1.3.4").build_requires == ()
    assert read_recipe(tmp_path / "pkg.toml", "2.0").import_names == ("new",)


@pytest.mark.parametrize(
    "condition",
    [
        '[[ -n "$TORCH_VERSION" ]]',
        "[[ $RSNT_ARCH == avx512 ]]",
        "[[ $VERSION =~ 1.1.* ]]",
        "[[ $VERSION == 1.2* ]]",
        "[[ $EBVERSIONGENTOO == 2023 || $VERSION == 1.0 ]]",
        "[[ $EBVERSIONGENTOO == 2023 ]] || [[ $VERSION == 1.0 ]]",
        "[ ! -e $SCRIPT_DIR/x.patch ]",
        "[[ $EBVERSIONGENTOO -ge 2023 ]]",
        "[[ $(translate_version $TORCH_VERSION) -lt $(translate_version '2.0') ]]",
    ],
)
def test_other_conditions_skip_their_branches(tmp_path: Path, condition: str) -> None:
    data, skipped = conv(
        tmp_path, f'if {condition}; then\n  PYTHON_DEPS="x"\nelse\n  PYTHON_DEPS="y"\nfi\n'
    )
    assert [line for line, _ in skipped] == [1, 2, 3, 4]
    assert "the branch is not converted" in skipped[0][1]
    assert "build" not in data and "targets" not in data and "versions" not in data


@pytest.mark.parametrize(
    ("condition", "if_branch", "else_branch"),
    [
        # build_wheel.sh's translate_version comparisons are release-version comparisons.
        ("[[ $(translate_version $VERSION) -lt $(translate_version '0.4.34')  ]]", "<0.4.34",
         ">=0.4.34"),
        ("[[ 10#$(translate_version $VERSION) -ge 10#$(translate_version '7.1.0') ]]",
         ">=7.1.0", "<7.1.0"),
        # The version is always set for cbuild; both tests must hold.
        ('[[ -n "$VERSION" ]] && [[ $(translate_version $VERSION) -le $(translate_version '
         "'1.2') ]]", "<=1.2", ">1.2"),
        ("[[ $VERSION == 1.2.* && $EBVERSIONGENTOO == 2023 ]]", None, None),
    ],
)  # fmt: skip
def test_version_comparisons_convert(
    tmp_path: Path, condition: str, if_branch: str | None, else_branch: str | None
) -> None:
    text = f'if {condition}; then\n  PYTHON_DEPS="x"\nelse\n  PYTHON_DEPS="y"\nfi\n'
    data, skipped = conv(tmp_path, text)
    if if_branch is None:  # several parts: the if converts, the else has no single negation
        assert [line for line, _ in skipped] == [3, 4]
        assert data["versions"]["==1.2.*"]["targets"]["gentoo2023-*"]["build"]["requires"] == ["x"]
        return
    assert skipped == []
    assert data["versions"][if_branch]["build"]["requires"] == ["x"]
    assert data["versions"][else_branch]["build"]["requires"] == ["y"]


@pytest.mark.parametrize(
    ("condition", "taken"),
    [
        ("[[ -n $EBROOTGENTOO ]]", "x"),  # every cbuild stack is a gentoo stack
        ('[[ -z "$EBROOTGENTOO" ]]', "y"),
        ("[[ $THIS_SCRIPT == 'build_wheel.sh' ]]", "x"),  # cbuild reads it as build_wheel.sh
        ("[[ $THIS_SCRIPT == 'unmanylinuxize.sh' ]]", "y"),
        ("[ -z ${VERSION} ]", "y"),  # cbuild always has a version
    ],
)
def test_tests_with_one_answer_for_cbuild_keep_only_the_branch_bash_takes(
    tmp_path: Path, condition: str, taken: str
) -> None:
    text = f'if {condition}; then\n  PYTHON_DEPS="x"\n  exit 1\nelse\n  PYTHON_DEPS="y"\nfi\n'
    data, skipped = conv(tmp_path, text)
    if taken == "x":
        assert skipped == [(3, "`exit` ends the legacy build script; a recipe cannot")]
    else:
        assert skipped == []  # the exit is in the branch bash never takes: nothing is lost
    assert data["build"]["requires"] == [taken]
    assert "versions" not in data and "targets" not in data


def test_a_later_unconditional_assignment_replaces_an_earlier_conditional_one(
    tmp_path: Path,
) -> None:
    text = 'if [[ $VERSION == 1.0 ]]; then\n  PYTHON_DEPS="x"\nfi\nPYTHON_DEPS="y"\n'
    data, skipped = conv(tmp_path, text)
    assert skipped == [] and data == {"package": {"name": "pkg"}, "build": {"requires": ["y"]},
                                      "test": {"requires": ["y"]}}  # fmt: skip


def test_variables_build_wheel_sh_never_reads_are_noted_not_omitted(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config/pkg.sh"
    path.write_text('PATCHE="x.patch"\nPACKAGE="pkg"\nFOO=bar\nPYTHON_DEPS="$FOO"\n')
    data, c = convert(path, LEGACY / "patches")
    assert c.skipped == []  # PACKAGE= its own name changes nothing; FOO is used
    assert [(n.line, n.reason) for n in c.notes] == [
        (1, "build_wheel.sh never reads PATCHE (a misspelt PATCHES?): it had no effect")
    ]
    assert data["build"]["requires"] == ["bar"]


def test_the_wheel_edit_idiom_finds_its_wheel_again(tmp_path: Path) -> None:
    text = (
        "POST_BUILD_COMMANDS='$SCRIPT_DIR/manipulate_wheels.py --inplace --force --remove_req "
        "cmake -w $WHEEL_NAME && WHEEL_NAME=$(ls *.whl)'\n"
    )
    data, skipped = conv(tmp_path, text)
    assert skipped == [] and data["wheel"] == {"remove_requires": ["cmake"]}


def test_download_exports_start_the_build_shell(tmp_path: Path) -> None:
    text = (
        "PRE_DOWNLOAD_COMMANDS='export CC=mpicc; export X=$EBROOTFFTW/lib'\n"
        "if [[ $VERSION == 1.0 ]]; then\n  PRE_BUILD_COMMANDS='sed -i s/a/b/ setup.py'\nfi\n"
        'PYTHON_DEPS="-U meson-python"\n'
    )
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    assert data["build"]["env"] == {"CC": "mpicc"}
    assert data["build"]["pre_build"] == ["export X=$EBROOTFFTW/lib"]
    # The version's table replaces pre_build whole, so it repeats the download's exports.
    assert data["versions"]["==1.0"]["build"]["pre_build"] == [
        "export X=$EBROOTFFTW/lib\nsed -i s/a/b/ setup.py"
    ]
    assert data["build"]["requires"] == ["meson-python"]  # -U: the environment is fresh


@pytest.mark.parametrize(
    ("arg", "git", "rev"),
    [
        ("https://github.com/o/r/archive/refs/tags/v${VERSION:?version required}.tar.gz",
         "https://github.com/o/r", "v{version}"),
        ("https://github.com/o/r/archive/${VERSION}.zip", "https://github.com/o/r", "{version}"),
        ("git+https://github.com/o/r.git@v${VERSION}#egg=r", "https://github.com/o/r.git",
         "v{version}"),
    ],
)  # fmt: skip
def test_git_revisions_as_download_arguments_become_git_sources(
    tmp_path: Path, arg: str, git: str, rev: str
) -> None:
    data, skipped = conv(tmp_path, f'PACKAGE_DOWNLOAD_ARGUMENT="{arg}"\n')
    assert skipped == [] and data["source"] == {"git": git, "rev": rev}


def test_a_branch_archive_is_reported(tmp_path: Path) -> None:
    _, skipped = conv(
        tmp_path, "PACKAGE_DOWNLOAD_ARGUMENT=https://github.com/o/r/archive/master.zip"
    )
    assert skipped == [(1, skipped[0][1])] and "a branch moves" in skipped[0][1]


def test_a_heredoc_value_expands_as_bash_read_it(tmp_path: Path) -> None:
    text = (
        "PRE_BUILD_COMMANDS=$(cat <<-END\n"
        "\tsed -i -e 's/version=.*/version=\"$VERSION\",/' setup.py;\n"
        "\tcmake -DX=\\$EBROOTPROTOBUF ..\n"
        "END\n"
        ") # This must stay on a separate line!\n"
        "PACKAGE_DOWNLOAD_ARGUMENT=https://github.com/o/r/archive/"
        "v${VERSION:?version required}.zip\n"
    )
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    # $VERSION was expanded when bash read it, inside the sed's single quotes: it still is.
    assert data["build"]["pre_build"] == [
        "sed -i -e 's/version=.*/version=\"'\"${VERSION}\"'\",/' setup.py;\n"
        "cmake -DX=$EBROOTPROTOBUF .."
    ]
    assert data["source"] == {"git": "https://github.com/o/r", "rev": "v{version}"}


def test_package_name_and_version_from_the_file_name() -> None:
    assert package_of(Path("config/Cartopy-0.20.2.sh")) == ("Cartopy", "0.20.2")
    assert package_of(Path("config/PyPrismatic-gpu.sh")) == ("PyPrismatic-gpu", None)
    assert package_of(Path("config/pyFFTW.sh")) == ("pyFFTW", None)


WHOLE = {
    "Cartopy.sh", "Cartopy-0.20.2.sh", "PyPrismatic-gpu.sh", "dgl.sh", "isafixture.sh",
    "numpy.sh", "pyFFTW.sh",
}  # fmt: skip


def test_import_the_samples(tmp_path: Path) -> None:
    results = import_configs(CONFIGS, tmp_path / "recipes")
    by = {r.config.name: r for r in results}
    assert {n for n, r in by.items() if r.whole} == WHOLE  # 7 of the 11 samples
    assert all(r.errors == [] for r in results)  # every written recipe checks clean
    for r in results:
        assert check_recipe(r.recipe) == []
    assert sorted(p.name for p in (tmp_path / "recipes").glob("*.toml")) == [
        "cartopy.toml", "dgl.toml", "isafixture.toml", "mpi4py.toml", "numpy.toml",
        "obspy.toml", "pbr.toml", "pyfftw.toml", "pyprismatic-gpu.toml", "torchvision.toml",
    ]  # fmt: skip
    # The patch a converted recipe names is copied beside it.
    assert (tmp_path / "recipes/patches/isafixture-note.patch").read_bytes() == (
        LEGACY / "patches/isafixture-note.patch"
    ).read_bytes()
    # Version-specific configs become [versions."==X"] tables of the package's recipe.
    cartopy = tomllib.loads((tmp_path / "recipes/cartopy.toml").read_text())
    assert cartopy["versions"]["==0.20.2"]["build"]["requires"] == ["pyshp", "shapely<2", "pyproj"]
    # build_wheel.sh sources it *instead of* Cartopy.sh: none of the generic config applies.
    assert list(cartopy["versions"]) == ["!=0.20.2", "==0.20.2"]
    assert read_recipe(tmp_path / "recipes/cartopy.toml", "0.20.2").build_requires == (
        "pyshp", "shapely<2", "pyproj",
    )  # fmt: skip
    pbr = [(s.line, s.reason.split(";")[0]) for s in by["pbr.sh"].skipped]
    assert pbr == [
        (1, "calls another script, whose effect cannot be known here"),
        (12, "arbitrary shell at the top level"),
        (13, "`exit` ends the legacy build script"),
        (4, f"patch file pbr-fix_localversion.patch not found in {LEGACY / 'patches'}"),
        (5, "shell on the wheel archive (unzip/zip)"),
    ]
    dgl = read_recipe(tmp_path / "recipes/dgl.toml", "2.1.0")
    assert (dgl.source.kind, dgl.source.git, dgl.source.rev) == (
        "git",
        "https://github.com/dmlc/dgl",
        "v2.1.0",
    )
    assert dgl.env == {"TORCH_CUDA_ARCH_LIST": "6.0;7.0;7.5;8.0;8.6;9.0"}


def test_configs_build_wheel_cannot_tell_apart_are_reported_not_merged(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/PyYAML.sh").write_text('PYTHON_DEPS="cython"\n')
    (tmp_path / "config/pyyaml.sh").write_text('PYTHON_DEPS="numpy"\n')
    results = import_configs(sorted((tmp_path / "config").glob("*.sh")), tmp_path / "out")
    results = sorted(results, key=lambda r: r.config.name)
    assert [(r.config.name, r.whole) for r in results] == [
        ("PyYAML.sh", True),
        ("pyyaml.sh", False),
    ]
    assert "cannot tell it from PyYAML.sh" in results[1].skipped[0].reason
    assert read_recipe(tmp_path / "out/pyyaml.toml", "1.0").build_requires == ("cython",)


def test_existing_recipes_are_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "recipes"
    import_configs([LEGACY / "config/pyFFTW.sh"], out)
    with pytest.raises(ConfigError, match="exists"):
        import_configs([LEGACY / "config/pyFFTW.sh"], out)
    import_configs([LEGACY / "config/pyFFTW.sh"], out, force=True)


def test_cli_import_legacy_lists_what_was_not_converted(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "builder", "recipe", "import-legacy"]
    configs = [str(LEGACY / "config/pbr.sh"), str(LEGACY / "config/pyFFTW.sh")]
    res = subprocess.run(
        [*args, *configs, "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    assert "pyFFTW.sh -> " in res.stdout and "converted whole" in res.stdout
    assert "line 13: exit 1" in res.stdout
    assert "1 of 2 config(s) converted whole" in res.stderr
    res = subprocess.run(
        [*args, *configs, "--out", str(tmp_path), "--force", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    report = json.loads(res.stdout)
    assert [r["whole"] for r in report] == [False, True]
    assert report[0]["not_converted"][0]["line"] == 1


@pytest.mark.integration
def test_the_converted_fixture_recipe_builds_the_same_package(engine, sdist_factory, tmp_path):
    """isafixture.sh converts whole, and the recipe it gives builds, edits and tests the C
    fixture through the real engine as the legacy script would have."""
    from builder.pipeline.job import Pipeline
    from builder.pipeline.model import WheelRequest

    (result,) = import_configs([LEGACY / "config/isafixture.sh"], tmp_path / "recipes")
    assert result.whole, result.skipped
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve(["gentoo2023-generic"])),
        tmp_path / "wheelhouse",
        tmp_path / "cache",
        tmp_path / "recipes",
        sdist=sdist_factory(),
    )
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested", r.test_detail
    assert "building isafixture 0.1.0" in r.build_log.read_text()  # PRE_BUILD_COMMANDS ran
    test_log = r.test_log.read_text()
    assert "::cbuild-step:: python 1: assert isafixture.NOTE == 'patched'" in test_log
    import zipfile

    with zipfile.ZipFile(r.wheel) as zf:
        meta = zf.read("isafixture-0.1.0+computecanada.dist-info/METADATA").decode()
    assert [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist")] == [
        'Requires-Dist: packaging>=21; python_version >= "3.8"'
    ]


def bash_value(tmp_path: Path, text: str, name: str, version: str = "1.2.3") -> str:
    """What bash holds in `name` after sourcing `text` as build_wheel.sh does (stubbed)."""
    cfg = tmp_path / "cfg.sh"
    cfg.write_text(text)
    script = f'PACKAGE=pkg VERSION={version}\nsource {cfg}\nprintf %s "${{{name}}}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    ("text", "name", "field"),
    [
        # $VERSION expanded when bash read the value, even where the command single-quotes it.
        ("PRE_BUILD_COMMANDS=\"sed -i 's/1.1.2/$VERSION/' setup.py\"", "PRE_BUILD_COMMANDS",
         ("build", "pre_build")),
        ('PRE_TEST_COMMANDS="echo \'${VERSION}\' $VERSION"', "PRE_TEST_COMMANDS",
         ("test", "pre_commands")),
        # ${X:+...} / ${X:-...} of an operator's knob, unset by default; ${VERSION?msg}.
        ('PYTHON_DEPS="torch${TORCH_VERSION:+==$TORCH_VERSION} a${NOPE:-b}"', "PYTHON_DEPS",
         ("build", "requires")),
        ('PACKAGE_FOLDER_NAME="pkg-${VERSION?needs a version}"', "PACKAGE_FOLDER_NAME",
         ("source", "folder")),
    ],
)  # fmt: skip
def test_values_mean_what_bash_made_of_them(
    tmp_path: Path, text: str, name: str, field: tuple[str, str]
) -> None:
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    value = data[field[0]][field[1]]
    expected = bash_value(tmp_path, text, name)
    if isinstance(value, list) and field[1] == "requires":
        assert value == expected.split()  # pip gets $PYTHON_DEPS split at blanks
        return
    text_value = "\n".join(value) if isinstance(value, list) else value
    # The recipe's text, run by the build's shell with VERSION set, says what bash's value said.
    if field[0] == "source":
        assert text_value.format(version="1.2.3") == expected
    else:
        run = subprocess.run(
            ["bash", "-c", f"VERSION=1.2.3; printf '%s\\n' {text_value.split(' ', 1)[1]}"],
            capture_output=True, text=True,
        )  # fmt: skip
        want = subprocess.run(
            ["bash", "-c", f"printf '%s\\n' {expected.split(' ', 1)[1]}"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert run.stdout == want.stdout and "1.2.3" in run.stdout


def test_the_measurement_script_runs_on_the_samples(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    res = subprocess.run(
        [sys.executable, str(REPO / "tools/legacy_measure.py"), str(LEGACY), "--json", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["configs"] == len(CONFIGS) and report["crashes"] == []
    assert report["differential_defects"] == {}, report["differential_defects"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Bottleneck: its test runs pytest through bottleneck.test(), from the default module.
        ("PYTHON_DEPS='versioneer'\nPYTHON_TESTS='bottleneck.test();'",
         {"requires": ["versioneer", "pytest"], "python": ["bottleneck.test();"]}),
        # No test code: nothing runs pytest, nothing is added.
        ("PYTHON_DEPS='versioneer'", {"requires": ["versioneer"]}),
        # Already asked for (any spelling of the name): not twice.
        ("PYTHON_DEPS='PyTest>=7'\nPYTHON_TESTS='x.test()'",
         {"requires": ["PyTest>=7"], "python": ["x.test()"]}),
        # The config replaced the default modules without pytest: the legacy test had none.
        ("MODULE_BUILD_DEPS_DEFAULT='cython/3.0'\nPYTHON_TESTS='x.test()'",
         {"python": ["x.test()"]}),
        ("MODULE_BUILD_DEPS_DEFAULT='pytest/8.0 cython/3.0'\nPYTHON_TESTS='x.test()'",
         {"python": ["x.test()"], "requires": ["pytest"]}),
    ],
)  # fmt: skip
def test_default_pytest_module_becomes_a_test_requirement(
    tmp_path: Path, text: str, expected: dict
) -> None:
    data, skipped = conv(tmp_path, text)
    assert data.get("test", {}) == expected


def test_default_pytest_follows_the_scope_that_decides_the_test(tmp_path: Path) -> None:
    """A version branch with its own PYTHON_DEPS replaces the requirement list there: pytest
    must be in that list too, and the root's list keeps it as well."""
    text = (
        "PYTHON_DEPS='a'\nPYTHON_TESTS='x.test()'\n"
        'if [[ "$VERSION" == "2.0" ]]; then\n  PYTHON_DEPS="b"\nfi\n'
    )
    data, skipped = conv(tmp_path, text)
    assert skipped == []
    assert data["test"]["requires"] == ["a", "pytest"]
    (branch,) = data["versions"].values()
    assert branch["test"]["requires"] == ["b", "pytest"]
