"""`cbuild run`/`shell` decisions without containers: wheelhouse search order, manifests and
what their absence means, the recipe written back from a manifest, the container script, the
image choice, exit messages and command-line errors. The runs themselves are in
test_reproduce_integration.py."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from typer.testing import CliRunner

from builder.cli.app import app
from builder.engines.base import RunResult
from builder.manifest import Manifest, ManifestError
from builder.pipeline.keys import build_key
from builder.pipeline.model import TargetResult
from builder.pipeline.place import provenance
from builder.providers import spec_for
from builder.recipes import BUILTIN_RECIPES, load_recipe
from builder.sources import pypi
from builder.targets.cputest import qemu_binary
from builder.targets.model import resolve
from builder.wheels.info import WheelInspectError
from builder.workflows.reproduce import (
    NEEDED_TO_REBUILD,
    NEEDED_TO_RUN,
    RunPlan,
    cpu_level,
    find_in_wheelhouse,
    image_for_target,
    load_manifest,
    recipe_from_manifest,
    run_script,
    search_folders,
    wheelhouse_root,
)
from builder.workflows.run import exit_message, shell_argv

REPO_RECIPES = BUILTIN_RECIPES  # shipped as package data (builder/data/recipes)
V3, V4, GENERIC = resolve(["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4", "gentoo2023-generic"])
runner = CliRunner()


def wheel(folder: Path, name: str, members: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as zf:
        for n, data in (members or {"pkg/__init__.py": b""}).items():
            zf.writestr(n, data)
    return folder / name


# --- the wheelhouse ---------------------------------------------------------------------------


def test_search_order_is_level_then_stack_generic_then_pure() -> None:
    assert search_folders(V3) == ["gentoo2023/x86-64-v3", "gentoo2023/generic", "generic"]
    assert search_folders(GENERIC) == ["gentoo2023/generic", "generic"]


def test_find_in_wheelhouse_prefers_the_level_folder(tmp_path) -> None:
    wh = tmp_path / "wh"
    name = "bio-1.85+computecanada-cp311-cp311-linux_x86_64.whl"
    level = wheel(wh / "gentoo2023/x86-64-v3", name)
    wheel(wh / "gentoo2023/generic", name)
    found, looked = find_in_wheelhouse(Requirement("bio==1.85"), wh, V3)
    assert found == level and looked == ["gentoo2023/x86-64-v3"]
    # The generic target never reads a level folder.
    found, _ = find_in_wheelhouse(Requirement("bio==1.85"), wh, GENERIC)
    assert found == wh / "gentoo2023/generic" / name


def test_find_in_wheelhouse_versions_and_tags(tmp_path) -> None:
    wh = tmp_path / "wh"
    folder = wh / "gentoo2023/generic"
    wheel(folder, "bio-1.84+computecanada-cp311-cp311-linux_x86_64.whl")
    wheel(folder, "bio-1.85+computecanada-cp311-cp311-linux_x86_64.whl")
    wheel(folder, "bio-1.86+computecanada-cp312-cp312-linux_x86_64.whl")  # another Python
    wheel(wh / "generic", "purelib-2.0+computecanada-py3-none-any.whl")
    found, _ = find_in_wheelhouse(Requirement("Bio"), wh, V3)
    assert found.name.startswith("bio-1.85+")  # highest that the target's Python takes
    found, _ = find_in_wheelhouse(Requirement("bio<1.85"), wh, V3)
    assert found.name.startswith("bio-1.84+")
    found, _ = find_in_wheelhouse(Requirement("purelib>=2"), wh, V3)
    assert found == wh / "generic/purelib-2.0+computecanada-py3-none-any.whl"
    found, looked = find_in_wheelhouse(Requirement("bio==2.0"), wh, V3)
    assert found is None and looked == search_folders(V3)


def test_wheelhouse_root_from_the_wheels_folder(tmp_path) -> None:
    wh = tmp_path / "wh"
    assert wheelhouse_root(wh / "gentoo2023/x86-64-v4/a.whl", V4) == wh
    assert wheelhouse_root(wh / "gentoo2023/generic/a.whl", V3) == wh
    assert wheelhouse_root(wh / "generic/a.whl", V3) == wh
    assert wheelhouse_root(tmp_path / "elsewhere/a.whl", V3) is None


# --- manifests --------------------------------------------------------------------------------


def test_wheel_without_manifest_says_what_is_missing_and_how_to_get_it(tmp_path) -> None:
    w = wheel(tmp_path, "pkg-1.0-py3-none-any.whl")
    with pytest.raises(ManifestError) as exc:
        load_manifest(w, NEEDED_TO_REBUILD, "a rebuild")
    msg = exc.value.message
    assert "has no manifest" in msg and f"{w}.json does not exist" in msg
    assert "lock (the sdist and build inputs, each with its sha256)" in msg
    assert "cbuild wheel PKG VERSION --target ID" in exc.value.fix


def test_manifest_problems(tmp_path) -> None:
    w = wheel(tmp_path, "pkg-1.0-py3-none-any.whl")
    m = Path(f"{w}.json")
    m.write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        load_manifest(w, NEEDED_TO_RUN, "run")
    m.write_text(json.dumps({"target": {"id": "x"}}))
    with pytest.raises(ManifestError, match="lacks image_spec_hash, which run needs"):
        load_manifest(w, NEEDED_TO_RUN, "run")
    m.write_text(json.dumps({"target": {}, "image_spec_hash": "x", "wheel": "other.whl"}))
    with pytest.raises(ManifestError, match="describes other.whl"):
        load_manifest(w, NEEDED_TO_RUN, "run")


def test_bad_wheels_are_refused_before_the_manifest(tmp_path) -> None:
    not_zip = tmp_path / "pkg-1.0-py3-none-any.whl"
    not_zip.write_text("hello")
    with pytest.raises(WheelInspectError, match="not a zip archive"):
        load_manifest(not_zip, NEEDED_TO_RUN, "run")
    evil = wheel(tmp_path / "evil", "pkg-1.0-py3-none-any.whl", {"../../etc/x": b""})
    with pytest.raises(WheelInspectError, match="escapes the wheel's root"):
        load_manifest(evil, NEEDED_TO_RUN, "run")


@pytest.mark.parametrize("name", ["annoy", "biopython", "isafixture-defaults"])
def test_recipe_written_back_from_a_manifest_gives_the_same_build_key(name, tmp_path) -> None:
    """What `rebuild` builds with: the recorded recipe (patches included), loaded again, must
    be the recipe the wheel was built with: the build keys agree."""
    package = name.removesuffix("-defaults")
    version = "1.17.0" if package == "annoy" else "1.85"
    recipe = load_recipe(package, version, REPO_RECIPES)
    recorded = provenance(TargetResult(V3), recipe)
    manifest = Manifest.from_dict(
        json.loads(json.dumps({"package": package, "version": version, **recorded}))
    )
    again, folder, notes = recipe_from_manifest(manifest, tmp_path)
    lock = [pypi.LockEntry(package, version, f"{package}-{version}.tar.gz", "0" * 64, "sdist")]
    assert build_key(again.for_target(V3), lock, V3) == build_key(recipe.for_target(V3), lock, V3)
    assert notes == []
    if package == "annoy":
        assert (folder / "patches/annoy-1.17-setup.patch").read_bytes() == (
            REPO_RECIPES / "patches/annoy-1.17-setup.patch"
        ).read_bytes()


def test_manifest_without_recipe_falls_back_and_says_so(tmp_path) -> None:
    manifest = Manifest(package="annoy", version="1.17.0")
    recipe, _, notes = recipe_from_manifest(manifest, tmp_path, REPO_RECIPES)
    assert recipe.patches == ("annoy-1.17-setup.patch",)
    assert "does not record the recipe (older cbuild)" in notes[0]


def test_recorded_patch_names_stay_in_their_folder(tmp_path) -> None:
    manifest = Manifest(
        package="pkg",
        version="1.0",
        recipe={"file": None, "patches": {"../../escape.patch": "x"}},
    )
    with pytest.raises(ManifestError, match="leaves its folder"):
        recipe_from_manifest(manifest, tmp_path)


# --- images -----------------------------------------------------------------------------------


class Images:
    """A stand-in holding image tags (this unit test claims no engine); the real engine runs
    the same paths in test_reproduce_integration.py."""

    def __init__(self, have: dict[str, str]) -> None:
        self.have, self.built = dict(have), []

    def image_exists(self, tag: str) -> bool:
        return tag in self.have

    def image_id(self, tag: str) -> str:
        return self.have[tag]

    def build_image(self, spec, progress) -> str:
        self.built.append(spec.tag)
        self.have.setdefault(spec.tag, "sha256:new")
        return spec.tag


def test_image_choice_from_a_manifest() -> None:
    spec = spec_for(V3)
    recorded = Manifest(image=spec.tag, image_id="sha256:old", image_spec_hash=spec.hash)
    # The recorded image itself.
    engine = Images({spec.tag: "sha256:old"})
    assert image_for_target(engine, spec, print, recorded) == (spec.tag, [])
    assert engine.built == []
    # Gone: rebuilt from the recorded definition, and said so.
    engine = Images({})
    tag, notes = image_for_target(engine, spec, print, recorded)
    assert tag == spec.tag and engine.built == [spec.tag]
    assert "rebuilding it from the recorded definition" in notes[0]
    assert "differs from the recorded sha256:old" in notes[1]
    # Gone, and the definition changed since: said clearly.
    changed = dataclasses.replace(recorded, image_spec_hash="f00")
    tag, notes = image_for_target(Images({}), spec, print, changed)
    assert "cannot be rebuilt" in notes[0] and "NOT the image the wheel was built in" in notes[0]


# --- the container script ---------------------------------------------------------------------


def plan(**kw) -> RunPlan:
    return RunPlan(
        target=kw.pop("target", V3),
        image="img",
        installs=kw.pop("installs", ["/cbuild/with/0/a b.whl", "six>=1"]),
        find_links=["/cbuild/wheelhouse/0", "/cbuild/store"],
        mounts=[],
        **kw,
    )


def test_run_script_installs_offline_and_runs_the_command_as_a_child() -> None:
    script = run_script(plan())
    assert (
        "install --no-index --find-links /cbuild/wheelhouse/0 --find-links /cbuild/store" in script
    )
    assert "'/cbuild/with/0/a b.whl' 'six>=1'" in script
    assert "qemu" not in script
    assert script.rstrip().endswith('"$@"')  # not exec'd: PID 1 stays the shell, SIGILL is 132
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_run_script_with_cpu_runs_every_process_of_the_command_at_the_level() -> None:
    lv = cpu_level("x86-64-v3") if qemu_binary() else None
    if lv is None:
        pytest.skip("no qemu-user-static")
    script = run_script(plan(cpu=lv))
    setup, level_part = script.split("ulimit -c 0", 1)
    assert "pip --python /cbuild/runenv/bin/python install" in setup  # natively
    assert lv.qemu_cpu in level_part and "unshare -Urm sh -c" in level_part
    assert "mount -t binfmt_misc" in level_part and "/cbuild/shim/python" not in script
    assert 'exec sh /cbuild/shim/body.sh "$@"' in level_part
    assert "PATH=/cbuild/runenv/bin:$PATH" in level_part and level_part.rstrip().endswith('"$@"')
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_cpu_levels_qemu_cannot_emulate_are_refused() -> None:
    from builder.errors import ConfigError

    with pytest.raises(ConfigError, match="QEMU cannot emulate it"):
        cpu_level("x86-64-v4")
    with pytest.raises(ConfigError, match="unknown CPU level"):
        cpu_level("pentium9")


def test_exit_messages() -> None:
    assert exit_message(RunResult(0, ""), plan()) is None
    assert exit_message(RunResult(3, ""), plan()) is None  # the command's own failure
    assert "SIGILL" in exit_message(RunResult(132, "Illegal instruction"), plan())
    assert "SIGSEGV" in exit_message(RunResult(139, ""), plan())
    if qemu_binary():
        lv = cpu_level("x86-64-v3")
        msg = exit_message(RunResult(132, ""), plan(cpu=lv))
        assert msg.startswith("SIGILL under an exact x86-64-v3 CPU")
        out = "ImportError: x.so: CPU ISA level is lower than required"
        assert "glibc refused" in exit_message(RunResult(1, out), plan(cpu=lv))


def test_shell_command_line_for_podman_and_apptainer(tmp_path) -> None:
    from builder.engines.apptainer import ApptainerEngine
    from builder.engines.base import Mount
    from builder.engines.docker import DockerEngine

    class Podman(DockerEngine):  # the engine's own argv, without a connection
        def __init__(self) -> None:
            self.client = None

        def describe(self) -> str:
            return "podman 4.3.1 (Docker API 1.41)"

    p = plan()
    p.mounts = [Mount(tmp_path, "/cbuild/wheelhouse/0")]
    argv = shell_argv(Podman(), p, ["bash"], network=False, tty=True)
    assert argv[0] == "podman" and argv[argv.index("run") :][:6] == [
        "run",
        "--rm",
        "-i",
        "-t",
        "--network",
        "none",
    ]
    assert f"{tmp_path}:/cbuild/wheelhouse/0:ro" in argv
    assert argv[-6:-3] == ["img", "sh", "-c"] and argv[-2:] == ["cbuild-shell", "bash"]

    class Apptainer(ApptainerEngine):
        def __init__(self) -> None:
            self.fakeroot, self.network_isolated = True, True

    argv = shell_argv(Apptainer(), p, ["bash"], network=False, tty=True)
    assert argv[:2] == ["apptainer", "exec"] and "--containall" in argv
    assert argv[argv.index("--net") :][:3] == ["--net", "--network", "none"]


# --- the command line: bad input, before any engine -------------------------------------------


def test_cli_bad_input(tmp_path) -> None:
    res = runner.invoke(app, ["run", "gentoo2023-x86-64-v3"])
    assert res.exit_code == 2 and "no command given" in res.output
    res = runner.invoke(app, ["run", "gentoo2023-x86-64-v4", "--cpu", "x86-64-v4", "--", "true"])
    assert res.exit_code == 2 and "QEMU cannot emulate it" in res.output
    bad = tmp_path / "bad.whl"
    bad.write_text("x")
    for cmd in (["run", str(bad), "--", "true"], ["verify", str(bad)], ["rebuild", str(bad)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2 and "not a zip archive" in res.output, cmd
    w = wheel(tmp_path, "pkg-1.0-py3-none-any.whl")
    res = runner.invoke(app, ["verify", str(w)])
    assert res.exit_code == 2 and "has no manifest" in res.output
    res = runner.invoke(app, ["run", str(w), "--", "true"])
    assert res.exit_code == 2 and "cbuild run TARGET --with WHEEL" in res.output
    res = runner.invoke(app, ["verify", "pkg", "1.0"])
    assert res.exit_code == 2 and "needs --target" in res.output
    res = runner.invoke(app, ["verify", "a", "b", "c"])
    assert res.exit_code == 2 and "not 3 arguments" in res.output
