"""The main job end to end with a real engine: real images, real compilers, real QEMU.

The C-extension fixture (tests/fixtures/isafixture) is built for every target; its kernel holds
AVX-512 instructions when built for x86-64-v4 and AVX2 ones for x86-64-v3, so the level builds
really differ and an ISA leak really raises SIGILL under QEMU's exact x86-64-v3 model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.errors import PlacementError
from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.targets.cputest import plan_here
from builder.targets.levels import level
from builder.targets.model import all_targets, resolve
from builder.wheelhouse.lock import LOCK_NAME
from tests.conftest import FIXTURE_RECIPE

pytestmark = pytest.mark.integration

RECIPE = FIXTURE_RECIPE.read_text()  # the fixture's recipe, as the bench uses it
WHEEL = "isafixture-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
DEFAULT_PY = ("3.11",)  # the Python axis has its own tests (test_python_axis_integration)


def listing(root: Path) -> list[str]:
    """What a run left in the wheelhouse, but the lock file every placement takes there."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != LOCK_NAME)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def recipes(tmp: Path, text: str = RECIPE) -> Path:
    d = tmp / "recipes"
    d.mkdir(exist_ok=True)
    (d / "isafixture.toml").write_text(text)
    return d


def run(engine, sdist: Path, tmp: Path, cache: Path, targets=None, **kw) -> RunReport:
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(targets or all_targets(pythons=DEFAULT_PY)),
        kw.pop("wheelhouse", tmp / "wheelhouse"),
        cache,
        kw.pop("recipes_dir", None) or recipes(tmp),
        sdist=sdist,
        **kw,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


@pytest.fixture(scope="module")
def all_targets_run(engine, cache, tmp_path_factory) -> tuple[RunReport, Path]:
    from tests.conftest import make_sdist

    tmp = tmp_path_factory.mktemp("all")
    report = run(engine, make_sdist(tmp / "sdist"), tmp, cache, jobs=2)
    return report, tmp / "wheelhouse"


def test_fixture_all_targets_built_tested_placed(all_targets_run) -> None:
    report, wh = all_targets_run
    assert report.ok, report.error
    by = {r.target.id: r for r in report.results}
    # generic and v3 promise x86-64-v3: tested under QEMU with exactly its features.
    for tid in ("gentoo2023-generic", "gentoo2023-x86-64-v3"):
        assert by[tid].status == "tested", by[tid].test_detail
        assert "QEMU" in by[tid].test_how
    v4 = by["gentoo2023-x86-64-v4"]
    if plan_here(level("x86-64-v4")).mode == "native":
        assert v4.status == "tested" and "natively" in v4.test_how
    else:
        assert v4.status == "not-tested" and v4.test_detail.startswith("not tested: ")
    # The v4 build holds AVX-512 code: level-dependent, so each level folder gets its build
    # and there is no generic copy.
    assert by["gentoo2023-generic"].sha256 == by["gentoo2023-x86-64-v3"].sha256
    assert v4.sha256 != by["gentoo2023-x86-64-v3"].sha256
    assert listing(wh) == [
        "gentoo2023",
        "gentoo2023/x86-64-v3",
        f"gentoo2023/x86-64-v3/{WHEEL}",
        f"gentoo2023/x86-64-v3/{WHEEL}.json",
        "gentoo2023/x86-64-v4",
        f"gentoo2023/x86-64-v4/{WHEEL}",
        f"gentoo2023/x86-64-v4/{WHEEL}.json",
    ]


def test_placed_wheel_is_repaired_and_has_a_manifest(all_targets_run) -> None:
    report, wh = all_targets_run
    wheel = wh / "gentoo2023/x86-64-v4" / WHEEL
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read("isafixture-0.1.0+computecanada.dist-info/METADATA").decode()
        tags = zf.read("isafixture-0.1.0+computecanada.dist-info/WHEEL").decode()
        assert {i.date_time for i in zf.infolist()} == {zf.infolist()[0].date_time}
    assert "Version: 0.1.0+computecanada" in meta
    assert "Tag: cp311-cp311-linux_x86_64" in tags
    assert names == sorted(names, key=lambda n: (".dist-info/" in n, n.endswith("RECORD"), n))
    manifest = json.loads((wheel.parent / f"{WHEEL}.json").read_text())
    assert manifest["target"]["id"] == "gentoo2023-x86-64-v4"
    assert "-march=x86-64-v4" in manifest["target"]["flags"]["CFLAGS"]
    assert manifest["image_id"].startswith("sha256:")
    kinds = {e["kind"] for e in manifest["lock"]}
    assert kinds == {"sdist", "build"}  # the fixture has no runtime dependencies
    assert all(len(e["sha256"]) == 64 for e in manifest["lock"])


def test_rebuild_is_bit_identical_from_another_folder(engine, all_targets_run, tmp_path) -> None:
    from tests.conftest import make_sdist

    first, _ = all_targets_run
    again = run(
        engine,
        make_sdist(tmp_path / "other-sdist-dir"),
        tmp_path,
        tmp_path / "cache2",
        targets=resolve(["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"]),
    )
    assert again.ok, again.error
    before = {r.target.id: r.sha256 for r in first.results}
    for r in again.results:
        assert r.sha256 == before[r.target.id], r.target.id


def test_unchanged_inputs_rerun_without_any_container(all_targets_run, cache, tmp_path) -> None:
    """The second run of the same inputs into the same wheelhouse: "up to date", and the
    engine is not touched at all (a guard in its place fails on any call)."""
    from tests.conftest import make_sdist

    class NoEngine:
        def __getattr__(self, name: str):
            raise AssertionError(f"the engine was used ({name}) on a no-op rerun")

    first, wh = all_targets_run
    again = run(NoEngine(), make_sdist(tmp_path / "s"), tmp_path, cache, wheelhouse=wh)
    assert again.ok
    assert {r.status for r in again.results} == {"up to date"}
    assert {r.target.id: r.sha256 for r in again.results} == {
        r.target.id: r.sha256 for r in first.results
    }


def test_pure_source_is_built_once_and_tested_everywhere(engine, cache, tmp_path) -> None:
    import io
    import tarfile

    files = {
        "purepkg-1.0/pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n[project]\nname = "purepkg"\n'
        'version = "1.0"\n',
        "purepkg-1.0/purepkg/__init__.py": "def answer():\n    return 42\n",
    }
    sdist = tmp_path / "purepkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(text), 1_700_000_000
            tar.addfile(info, io.BytesIO(text.encode()))
    req = WheelRequest(
        "purepkg",
        "1.0",
        tuple(all_targets(pythons=DEFAULT_PY)),
        tmp_path / "wh",
        cache,
        tmp_path,
        sdist=sdist,
        jobs=2,
    )
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    assert [r.status for r in report.results][:2] == ["tested", "tested"]
    built_on = {r.build_log for r in report.results}
    assert len(built_on) == 1  # one build, one log
    assert report.results[1].seconds.get("build") is None  # adopted, not built again
    name = "purepkg-1.0+computecanada-py3-none-any.whl"
    assert listing(tmp_path / "wh") == ["generic", f"generic/{name}", f"generic/{name}.json"]


def test_existing_wheel_is_refused_and_kept(engine, all_targets_run, cache, tmp_path) -> None:
    from tests.conftest import make_sdist

    _, wh = all_targets_run
    before = {p: p.read_bytes() for p in wh.rglob("*.whl")}
    with pytest.raises(PlacementError, match="--force"):
        run(
            engine,
            make_sdist(tmp_path / "s"),
            tmp_path,
            cache,
            wheelhouse=wh,
            targets=resolve(["gentoo2023-x86-64-v4"]),
        )
    assert {p: p.read_bytes() for p in wh.rglob("*.whl")} == before


def test_isa_leak_is_caught_under_exact_v3(engine, cache, sdist_factory, tmp_path) -> None:
    """A v3 wheel that was really compiled for v4: QEMU's exact v3 CPU raises SIGILL."""
    leaky = RECIPE.replace("[test]", '[build]\nenv = { CFLAGS = "-O2 -march=x86-64-v4" }\n\n[test]')
    report = run(
        engine,
        sdist_factory(),
        tmp_path,
        cache,
        recipes_dir=recipes(tmp_path, leaky),
        targets=resolve(["gentoo2023-x86-64-v3"]),
    )
    assert not report.ok
    r = report.results[0]
    assert r.status == "isa-leak", r.test_detail
    assert "x86-64-v3" in r.test_detail
    assert listing(tmp_path / "wheelhouse") == []


def test_compile_error_shows_log_tail_and_exports_nothing(
    engine, cache, sdist_factory, tmp_path
) -> None:
    src = (Path(__file__).parent / "fixtures/isafixture/src/isafixture/_kernel.c").read_text()
    broken = sdist_factory({"src/isafixture/_kernel.c": src + "\nthis is not C;\n"})
    report = run(engine, broken, tmp_path, cache, targets=resolve(["gentoo2023-generic"]))
    r = report.results[0]
    assert r.status == "build-failed"
    assert "error:" in r.test_detail  # gcc's message, from the log's tail
    assert r.build_log.exists() and "this is not C" in r.build_log.read_text()
    assert str(r.build_log) in r.reason
    assert not report.ok and listing(tmp_path / "wheelhouse") == []


def test_build_that_tries_the_network_fails_clearly(engine, cache, sdist_factory, tmp_path) -> None:
    setup = (Path(__file__).parent / "fixtures/isafixture/setup.py").read_text()
    net = "import urllib.request\nurllib.request.urlopen('https://pypi.org/simple/', timeout=5)\n"
    report = run(
        engine,
        sdist_factory({"setup.py": net + setup}),
        tmp_path,
        cache,
        targets=resolve(["gentoo2023-generic"]),
    )
    r = report.results[0]
    assert r.status == "build-failed"
    assert "network, which is off during builds" in r.reason
    assert listing(tmp_path / "wheelhouse") == []


def test_failing_test_command_fails_the_run(engine, cache, sdist_factory, tmp_path) -> None:
    failing = RECIPE.replace("== 11.0", "== 12.0")
    report = run(
        engine,
        sdist_factory(),
        tmp_path,
        cache,
        recipes_dir=recipes(tmp_path, failing),
        targets=resolve(["gentoo2023-generic"]),
    )
    r = report.results[0]
    assert r.status == "failed"
    assert "command 1" in r.test_detail and "AssertionError" in r.test_detail
    assert listing(tmp_path / "wheelhouse") == []


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def test_cli_unwritable_wheelhouse(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    res = cli(
        "wheel",
        "isafixture",
        "0.1.0",
        "--target",
        "gentoo2023-generic",
        "--wheelhouse",
        str(tmp_path / "afile" / "wh"),
    )
    assert res.returncode == 6, res.stderr
    assert "not writable" in res.stderr and "--wheelhouse" in res.stderr


def test_cli_no_engine_says_what_to_start() -> None:
    from builder.engines.docker import connect
    from builder.errors import EngineError

    with pytest.raises(EngineError) as exc:
        connect(["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9"], timeout=2)
    assert "no container engine answers" in exc.value.message
    assert "podman system service" in exc.value.fix


@pytest.mark.network
def test_cli_biopython_all_targets(engine, tmp_path) -> None:
    """The README's main job: biopython 1.85 for every target (every level x every Python
    buildable here: 3.11 and 3.13; 3.12 where a mirror of its source answers), Bio tested on
    each level and Python; a rerun is a no-op."""
    wh = tmp_path / "wheelhouse"
    res = cli("wheel", "biopython", "1.85", "--all-targets", "--wheelhouse", str(wh), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    by = {t["target"]: t for t in report["targets"]}
    if "gentoo2023-generic-py312" not in by:  # no mirror here: said, not hidden
        assert "gentoo2023-generic-py312 not buildable here: no mirror of Python-3.12" in (
            res.stderr.replace("\n", " ")
        )
    placed = {str(Path(p).relative_to(wh)) for p in report["placed"]}
    for suffix, py in (("", "cp311"), ("-py313", "cp313")):
        assert by[f"gentoo2023-generic{suffix}"]["status"] == "tested"
        assert by[f"gentoo2023-x86-64-v3{suffix}"]["status"] == "tested"
        assert by[f"gentoo2023-x86-64-v4{suffix}"]["status"] in {"tested", "not-tested"}
        name = f"biopython-1.85+computecanada-{py}-{py}-linux_x86_64.whl"
        # Placed by evidence: the v4 build holds AVX-512 code (measured with `cbuild inspect`:
        # 478 instructions above x86-64-v3 for cp311, in _pairwisealigner, _cluster, ccealign
        # and _codonaligner; the baseline build none), so it is level-specific: each level
        # folder gets its build, and no generic copy of the same file name.
        assert {p for p in placed if p.endswith(name)} == {
            f"gentoo2023/x86-64-v3/{name}",
            f"gentoo2023/x86-64-v4/{name}",
        }
        assert "instructions above x86-64-v3" in by[f"gentoo2023-x86-64-v4{suffix}"]["reason"]
    assert "Python 3.13" in by["gentoo2023-x86-64-v3-py313"]["tested"]
    assert {e["name"] for e in report["lock"] if e["kind"] == "runtime"} >= {"numpy"}
    again = cli("wheel", "biopython", "1.85", "--all-targets", "--wheelhouse", str(wh), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {t["status"] for t in json.loads(again.stdout)["targets"]} == {"up to date"}


def test_ctrl_c_mid_build_leaves_no_container_and_no_wheel(engine, sdist_factory, tmp_path) -> None:
    import signal
    import time

    wh, cache = tmp_path / "wh", tmp_path / "cache"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "builder",
            "wheel",
            "isafixture",
            "0.1.0",
            "--all-targets",
            "--jobs",
            "2",
            "--sdist",
            str(sdist_factory()),
            "--wheelhouse",
            str(wh),
            "--cache",
            str(cache),
            "--recipes",
            str(recipes(tmp_path)),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if "build (network off)" in line or time.monotonic() > deadline:
            break
    time.sleep(1)  # inside the compiler
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    ours = [
        c
        for c in engine.client.containers.list(all=True, filters={"label": "org.cbuild.run"})
        if any(str(tmp_path) in m.get("Source", "") for m in c.attrs.get("Mounts", []))
    ]
    assert ours == []
    assert listing(wh) == []


@pytest.mark.network
def test_recipe_system_library_gets_an_image_of_its_own(engine, tmp_path) -> None:
    """pyFFTW links FFTW: its recipe's apt package makes its own image, built and tested in."""
    res = cli(
        "wheel",
        "pyfftw",
        "0.15.0",
        "--target",
        "gentoo2023-x86-64-v3",
        "--wheelhouse",
        str(tmp_path / "wh"),
        "--cache",
        str(tmp_path / "cache"),
        "--json",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["targets"][0]["status"] == "tested"
    manifest = json.loads(Path(report["placed"][0] + ".json").read_text())
    from builder.providers import spec_for

    plain = spec_for(resolve(["gentoo2023-x86-64-v3"])[0])
    assert manifest["image_spec_hash"] != plain.hash  # libfftw3-dev: another definition
    assert manifest["image"].endswith(":" + manifest["image_spec_hash"])


def test_c_extension_without_a_recipe_builds_with_defaults(
    engine, cache, sdist_factory, tmp_path
) -> None:
    """No recipe: the import test takes its names from the wheel's top-level modules."""
    empty = tmp_path / "no-recipes"
    empty.mkdir()
    report = run(
        engine,
        sdist_factory(),
        tmp_path,
        cache,
        recipes_dir=empty,
        targets=resolve(["gentoo2023-generic"]),
    )
    assert report.ok, report.error
    r = report.results[0]
    assert r.status == "tested"
    assert "import isafixture" in r.test_log.read_text()
    assert listing(tmp_path / "wheelhouse")[-1] == f"gentoo2023/generic/{WHEEL}.json"


def test_ccache_gives_the_same_bits_and_fills_its_cache(
    engine, all_targets_run, tmp_path, sdist_factory
) -> None:
    first, _ = all_targets_run
    cache = tmp_path / "cache"
    v3 = resolve(["gentoo2023-x86-64-v3"])
    report = run(engine, sdist_factory(), tmp_path, cache, targets=v3, ccache=True)
    assert report.ok, report.error
    objects = list((cache / "ccache" / "gentoo2023-x86-64-v3").rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 1000 for p in objects)  # compiled results
    again = run(
        engine,
        sdist_factory(),
        tmp_path,
        cache,
        targets=v3,
        ccache=True,
        rebuild=True,
        wheelhouse=tmp_path / "wh2",
    )
    assert again.ok, again.error
    before = {r.target.id: r.sha256 for r in first.results}
    assert report.results[0].sha256 == again.results[0].sha256 == before["gentoo2023-x86-64-v3"]
