"""`cbuild run` / `cbuild shell` end to end: a real engine, real images, a wheelhouse filled by
the pipeline, real QEMU.

One pipeline run (module scope) places the C fixture for x86-64-v3 and x86-64-v4. The v4 build
leaves out its ELF ISA note (`LDFLAGS = ""` for that target), as an unmarked wheel from
elsewhere would: glibc then loads it on any CPU and its AVX-512 code raises SIGILL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

RECIPE = """\
[package]
name = "isafixture"
import_names = ["isafixture"]

[test]
commands = ['python -c "import isafixture; print(isafixture.compiled_level())"']

# Without the ISA note glibc loads the library anywhere: its AVX-512 code then raises SIGILL.
[targets."gentoo2023-x86-64-v4".build]
env = { LDFLAGS = "" }
"""
WHEEL = "isafixture-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
LEVEL = "import isafixture; print(isafixture.compiled_level())"
VECTOR = "import isafixture; print(isafixture.vector_sum([1.0] * 9 + [0.5] * 4))"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=900,
    )


@pytest.fixture(scope="module")
def placed(engine, tmp_path_factory) -> tuple[RunReport, Path, Path]:
    from tests.conftest import make_sdist

    tmp = tmp_path_factory.mktemp("reproduce")
    (tmp / "recipes").mkdir()
    (tmp / "recipes" / "isafixture.toml").write_text(RECIPE)
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve(["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"])),
        tmp / "wheelhouse",
        tmp / "cache",
        tmp / "recipes",
        sdist=make_sdist(tmp / "sdist"),
        jobs=2,
    )
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    return report, tmp / "wheelhouse", tmp / "cache"


def test_run_target_with_a_wheel_from_the_wheelhouse(placed) -> None:
    _, wh, cache = placed
    res = cli(
        "run",
        "gentoo2023-x86-64-v3",
        "--with",
        "isafixture==0.1.0",
        "--wheelhouse",
        str(wh),
        "--cache",
        str(cache),
        "--",
        "python",
        "-c",
        LEVEL,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "x86-64-v3"
    # The level folder's wheel, found in the order a node's pip reads the wheelhouse.
    assert f"gentoo2023/x86-64-v3/{WHEEL}" in res.stderr


def test_run_returns_the_commands_exit_status_and_output(placed) -> None:
    _, wh, cache = placed
    res = cli(
        "run",
        "gentoo2023-x86-64-v3",
        "--cache",
        str(cache),
        "--",
        "sh",
        "-c",
        'echo "out $VIRTUAL_ENV"; echo err >&2; exit 7',
    )
    assert res.returncode == 7, res.stderr
    assert res.stdout.splitlines() == ["out /cbuild/runenv", "err"]


def test_run_wheel_uses_its_manifests_image(engine, placed) -> None:
    _, wh, cache = placed
    wheel = wh / "gentoo2023/x86-64-v4" / WHEEL
    manifest = json.loads((wheel.parent / f"{WHEEL}.json").read_text())
    res = cli(
        "run",
        str(wheel),
        "--cache",
        str(cache),
        "--",
        "sh",
        "-c",
        'echo "$CBUILD_TARGET"; python -c "import isafixture; print(isafixture.__file__)"',
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "gentoo2023-x86-64-v4",
        "/cbuild/runenv/lib/python3.11/site-packages/isafixture/__init__.py",
    ]
    assert engine.image_id(manifest["image"]) == manifest["image_id"]
    assert "note:" not in res.stderr  # the recorded image itself: nothing to say


def test_cpu_v3_on_a_v4_wheel_is_sigill_reported_as_such(placed) -> None:
    _, wh, cache = placed
    wheel = wh / "gentoo2023/x86-64-v4" / WHEEL
    res = cli(
        "run", str(wheel), "--cpu", "x86-64-v3", "--cache", str(cache), "--", "python", "-c", VECTOR
    )
    assert res.returncode == 132, (res.stdout, res.stderr)
    assert "SIGILL under an exact x86-64-v3 CPU" in res.stderr
    assert "instructions above x86-64-v3" in res.stderr


def test_cpu_v2_on_a_v3_wheel_is_refused_by_glibc(placed) -> None:
    """The v3 wheel carries its ISA note: on an older CPU glibc refuses to load it."""
    _, wh, cache = placed
    wheel = wh / "gentoo2023/x86-64-v3" / WHEEL
    res = cli(
        "run", str(wheel), "--cpu", "x86-64-v2", "--cache", str(cache), "--", "python", "-c", LEVEL
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "CPU ISA level is lower than required" in res.stdout
    assert "glibc refused a library under an exact x86-64-v2 CPU" in res.stderr


def test_cpu_v3_on_a_v3_wheel_passes(placed) -> None:
    _, wh, cache = placed
    wheel = wh / "gentoo2023/x86-64-v3" / WHEEL
    res = cli(
        "run", str(wheel), "--cpu", "x86-64-v3", "--cache", str(cache), "--", "python", "-c", VECTOR
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "11.0"


def _copy_with_manifest(wheel: Path, dest: Path, **changes: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, dest / wheel.name)
    manifest = json.loads(wheel.with_name(wheel.name + ".json").read_text())
    manifest.update(changes)
    (dest / f"{wheel.name}.json").write_text(json.dumps(manifest))
    return dest / wheel.name


def test_manifest_whose_image_is_gone_is_rebuilt_from_its_definition(placed, tmp_path) -> None:
    _, wh, cache = placed
    wheel = _copy_with_manifest(
        wh / "gentoo2023/x86-64-v3" / WHEEL, tmp_path, image="localhost/cbuild/gone:0000"
    )
    res = cli("run", str(wheel), "--cache", str(cache), "--", "python", "-c", LEVEL)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "x86-64-v3"
    assert "no longer exists: rebuilding it from the recorded definition" in res.stderr


def test_manifest_whose_definition_changed_says_so(placed, tmp_path) -> None:
    _, wh, cache = placed
    wheel = _copy_with_manifest(
        wh / "gentoo2023/x86-64-v3" / WHEEL,
        tmp_path,
        image="localhost/cbuild/gone:0000",
        image_spec_hash="0123456789abcdef",
    )
    res = cli("run", str(wheel), "--cache", str(cache), "--", "true")
    assert res.returncode == 0, res.stderr
    assert "its definition cannot be rebuilt" in res.stderr
    assert "0123456789abcdef" in res.stderr and "NOT the image the wheel was built in" in res.stderr


def test_missing_requirement_is_a_setup_error_not_the_commands(placed, tmp_path) -> None:
    _, wh, cache = placed
    res = cli(
        "run",
        "gentoo2023-x86-64-v3",
        "--with",
        "isafixture==9.9",
        "--wheelhouse",
        str(wh),
        "--cache",
        str(tmp_path / "cache"),
        "--",
        "true",
    )
    assert res.returncode == 125, res.stderr
    assert "isafixture==9.9" in res.stderr and "No matching distribution" in res.stderr


def test_shell_runs_the_engines_own_command_line(placed) -> None:
    """Not a terminal here: the shell reads its commands from stdin (-i without -t)."""
    _, wh, cache = placed
    args = ["gentoo2023-x86-64-v3", "--with", "isafixture==0.1.0", "--wheelhouse", str(wh)]
    printed = cli("shell", *args, "--cache", str(cache), "--print")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split()[0] in ("podman", "docker")
    assert " run --rm -i --network none " in printed.stdout
    if shutil.which(printed.stdout.split()[0]) is None:
        pytest.skip(f"{printed.stdout.split()[0]} command line tool not installed")
    res = cli("shell", *args, "--cache", str(cache), stdin=f"python -c '{LEVEL}'\nexit 3\n")
    assert res.returncode == 3, res.stderr
    assert res.stdout.strip() == "x86-64-v3"


@pytest.mark.network
def test_run_biopython_from_a_wheelhouse_made_by_cbuild_wheel(engine, tmp_path) -> None:
    """The issue's own "done when": biopython 1.85 built into a wheelhouse, then imported from
    it in the target's image (numpy, its dependency, from what the build fetched)."""
    wh, cache = tmp_path / "wheelhouse", tmp_path / "cache"
    common = ["--wheelhouse", str(wh), "--cache", str(cache)]
    built = cli("wheel", "biopython", "1.85", "--target", "gentoo2023-x86-64-v3", *common)
    assert built.returncode == 0, built.stderr[-3000:]
    code = "import Bio.Align, numpy; print(Bio.__version__)"
    res = cli(
        "run",
        "gentoo2023-x86-64-v3",
        "--with",
        "biopython==1.85",
        *common,
        "--",
        "python",
        "-c",
        code,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1.85"
    assert "/biopython-1.85+computecanada-" in res.stderr  # from the wheelhouse
