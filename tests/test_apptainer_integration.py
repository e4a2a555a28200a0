"""The Apptainer engine against a real Apptainer, driven through spython: real SIFs, real wheels.

Where no Apptainer is installed, the test harness (ci/apptainer-harness.sh: Apptainer 1.4 from
Debian sid in a privileged Podman container) is started and put first on PATH. The tests skip,
with the reason, only where that cannot be done; where CI demands Apptainer
(CBUILD_REQUIRE_APPTAINER=1, set by .ci/run) they fail instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.engines.base import Mount, RunSpec
from builder.errors import EngineError
from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.providers import spec_for
from builder.targets.model import all_targets, resolve
from tests.conftest import FIXTURE_RECIPE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "ci" / "apptainer-harness.sh"
RECIPE = FIXTURE_RECIPE.read_text()  # the fixture's recipe, as the bench uses it


def _unavailable(reason: str) -> None:
    if os.environ.get("CBUILD_REQUIRE_APPTAINER") == "1":
        pytest.fail(f"CBUILD_REQUIRE_APPTAINER=1 but {reason}")
    pytest.skip(reason)


def _harness_env() -> dict[str, str]:
    """Start the harness and return the variables its `env` command exports."""
    if os.getuid() != 0 or not shutil.which("podman") or not shutil.which("mmdebstrap"):
        _unavailable(
            "no Apptainer on PATH, and the harness needs root, podman and mmdebstrap "
            "(run ci/setup.sh, then ci/apptainer-harness.sh start)"
        )
    start = subprocess.run(["bash", str(HARNESS), "start"], capture_output=True, text=True)
    if start.returncode != 0:
        _unavailable(f"the Apptainer harness did not start:\n{start.stderr[-2000:]}")
    out = subprocess.run(["bash", str(HARNESS), "env"], capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.replace("$PATH", os.environ["PATH"])
    return env


@pytest.fixture(scope="session")
def apptainer_env() -> dict[str, str]:
    if shutil.which("singularity") and shutil.which("apptainer"):
        return {}
    return _harness_env()


@pytest.fixture(scope="session")
def apptainer(apptainer_env):
    from builder.engines.apptainer import ApptainerEngine

    mp = pytest.MonkeyPatch()
    for k, v in apptainer_env.items():
        mp.setenv(k, v)
    try:
        yield ApptainerEngine()
    except EngineError as exc:
        _unavailable(f"Apptainer is not usable: {exc}")
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def sifs(apptainer) -> dict[str, str]:
    """Every target's SIF (built once, then cached by definition hash across runs)."""
    targets = all_targets(pythons=("3.11",))  # the Python axis: tests/test_python_axis*
    return {t.id: apptainer.build_image(spec_for(t), lambda m: None) for t in targets}


def test_sif_named_by_definition_hash_and_not_rebuilt(apptainer, sifs) -> None:
    from spython.main import Client

    from builder.images.apptainer import definition_hash

    t = all_targets(pythons=("3.11",))[2]
    spec = spec_for(t)
    _, _, sif, target_def = apptainer.sif_for(spec, lambda m: None)
    assert sifs[t.id] == str(sif)
    assert sif.name == f"{t.id}-{definition_hash(target_def)}.sif"
    before = sif.stat().st_mtime_ns
    t0 = time.monotonic()
    assert apptainer.build_image(spec, lambda m: None) == str(sif)
    assert time.monotonic() - t0 < 5 and sif.stat().st_mtime_ns == before
    assert apptainer.image_exists(spec.tag) and apptainer.image_exists(str(sif))
    assert apptainer.image_id(str(sif)).startswith("sha256:")
    labels = Client.inspect(str(sif), quiet=True)["attributes"]["labels"]
    assert labels["org.cbuild.target"] == t.id
    assert labels["org.cbuild.spec-hash"] == spec.hash


def test_run_is_contained_offline_root_and_keeps_env_literal(apptainer, sifs, tmp_path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "input.txt").write_text("hello\n")
    script = "\n".join(
        [
            'printf "user=%s\\n" "$(id -u)"',
            'printf "target=%s\\n" "$CBUILD_TARGET"',  # %environment, at run time
            'printf "cflags=%s\\n" "$CFLAGS"',  # RunSpec env wins over %environment
            'printf "ldflags=%s\\n" "$LDFLAGS"',  # commas survive
            'printf "literal=%s\\n" "$LITERAL"',  # no shell evaluation of values
            'printf "host=%s\\n" "${HOSTVAR:-unset}"',  # --cleanenv
            'printf "ifaces=%s\\n" "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " ")"',
            "cat /cbuild/in/input.txt > /cbuild/out/copy.txt",
            "mkdir -p /cbuild/src/scratch",  # the overlay makes the image writable
            "touch /cbuild/in/nope 2>/dev/null && echo ro=no || echo ro=yes",
            "exit 7",
        ]
    )
    os.environ["HOSTVAR"] = "leaked"
    try:
        res = apptainer.run(
            RunSpec(
                image=sifs["gentoo2023-x86-64-v3"],
                command=["sh", "-c", script],
                mounts=(Mount(src, "/cbuild/in"), Mount(out, "/cbuild/out", read_only=False)),
                env={"CFLAGS": "-O1", "LDFLAGS": "-Wl,-z,x86-64-v3", "LITERAL": "a $b `c`"},
            ),
            tmp_path / "run.log",
        )
    finally:
        del os.environ["HOSTVAR"]
    got = dict(ln.split("=", 1) for ln in res.output.splitlines() if "=" in ln)
    assert res.exit_code == 7
    assert got["user"] == "0"  # --fakeroot: root in the container, as under Docker
    assert got["target"] == "gentoo2023-x86-64-v3"
    assert got["cflags"] == "-O1"
    assert got["ldflags"] == "-Wl,-z,x86-64-v3"
    assert got["literal"] == "a $b `c`"
    assert got["host"] == "unset"
    assert got["ifaces"] == "lo"  # --net --network none
    assert got["ro"] == "yes"
    assert (out / "copy.txt").read_text() == "hello\n"  # readable by us, written by it
    assert "[exit 7]" in (tmp_path / "run.log").read_text()


def _run(engine, sdist: Path, tmp: Path, cache: Path, targets=None) -> RunReport:
    recipes = tmp / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "isafixture.toml").write_text(RECIPE)
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(targets or all_targets(pythons=("3.11",))),
        tmp / "wheelhouse",
        cache,
        recipes,
        sdist=sdist,
        jobs=2,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


def test_fixture_wheels_are_the_docker_engines_bit_for_bit(
    apptainer, sifs, engine, tmp_path_factory
) -> None:
    """All targets through Apptainer: built offline, tested (QEMU's exact x86-64-v3 for the
    generic and v3 builds), placed; the same wheel files as the Docker engine's."""
    from tests.conftest import make_sdist

    reports, seconds = {}, {}
    for name, eng in (("apptainer", apptainer), ("docker", engine)):
        for t in all_targets(pythons=("3.11",)):  # warm images: only the job itself is timed
            eng.build_image(spec_for(t), lambda m: None)
        tmp = tmp_path_factory.mktemp(name)
        t0 = time.monotonic()
        reports[name] = _run(eng, make_sdist(tmp / "sdist"), tmp, tmp / "cache")
        seconds[name] = round(time.monotonic() - t0, 1)
        reports[name].wheelhouse = tmp / "wheelhouse"
    print(f"\nfixture, all targets, warm images: {json.dumps(seconds)}")
    app, dock = reports["apptainer"], reports["docker"]
    assert app.ok, app.error
    assert dock.ok, dock.error
    by = {r.target.id: r for r in app.results}
    for tid in ("gentoo2023-generic", "gentoo2023-x86-64-v3"):
        assert by[tid].status == "tested" and "QEMU" in by[tid].test_how, by[tid].test_detail
        assert "every process" in by[tid].test_detail  # the private binfmt_misc, nested
    assert {r.target.id: r.sha256 for r in app.results} == {
        r.target.id: r.sha256 for r in dock.results
    }

    def tree(wh: Path) -> dict[str, bytes]:
        return {str(p.relative_to(wh)): p.read_bytes() for p in sorted(wh.rglob("*.whl"))}

    assert tree(app.wheelhouse) == tree(dock.wheelhouse) != {}
    manifest = json.loads(next(app.wheelhouse.rglob("*.whl.json")).read_text())
    assert manifest["engine"].startswith("apptainer version")
    assert manifest["network_isolated"] is True
    assert manifest["image"].endswith(".sif") and manifest["image_id"].startswith("sha256:")


def test_build_that_tries_the_network_fails_clearly(apptainer, sifs, sdist_factory, tmp_path):
    setup = (REPO / "tests/fixtures/isafixture/setup.py").read_text()
    net = "import urllib.request\nurllib.request.urlopen('https://pypi.org/simple/', timeout=5)\n"
    report = _run(
        apptainer,
        sdist_factory({"setup.py": net + setup}),
        tmp_path,
        tmp_path / "cache",
        targets=resolve(["gentoo2023-generic"]),
    )
    r = report.results[0]
    assert r.status == "build-failed"
    assert "network, which is off during builds" in r.reason


def test_definition_failing_to_build_names_section_and_log(apptainer, sifs) -> None:
    spec = spec_for(all_targets(pythons=("3.11",))[0])
    broken = dataclasses.replace(spec, steps=(*spec.steps, "echo cbuild-broken-step; exit 3"))
    with pytest.raises(EngineError) as exc:
        apptainer.build_image(broken, lambda m: None)
    msg = exc.value.message
    assert "failed in %post" in msg and "cbuild-broken-step" in msg
    log = Path(msg.split("log: ", 1)[1].split()[0])
    assert log.is_file() and "exit 3" in log.read_text()
    assert not apptainer.image_exists(broken.tag)


def test_user_without_subuid_is_told_the_missing_line(
    apptainer, sifs, apptainer_env, monkeypatch, tmp_path
):
    from builder.engines.apptainer import ApptainerEngine

    path = apptainer_env.get("PATH", os.environ["PATH"])
    nosub = Path(shutil.which("singularity", path=path) or "/").parent.with_name("bin-nosubuid")
    if not (nosub / "singularity").exists():
        pytest.skip("only the harness has a user without /etc/subuid lines to test with")
    monkeypatch.setenv("PATH", f"{nosub}:{os.environ['PATH']}")
    with pytest.raises(EngineError) as exc:
        ApptainerEngine().run(
            RunSpec(image=sifs["gentoo2023-generic"], command=["true"]), tmp_path / "log"
        )
    assert "/etc/subuid and /etc/subgid have no line for nosubuid" in exc.value.message
    assert "nosubuid:100000:65536" in exc.value.fix


def test_full_sif_cache_is_refused_before_building(apptainer_env, tmp_path, monkeypatch) -> None:
    from builder.engines.apptainer import ApptainerEngine

    for k, v in apptainer_env.items():
        monkeypatch.setenv(k, v)
    store = Path(os.environ.get("CBUILD_APPTAINER_IMAGES", tmp_path)) / f"full-{tmp_path.name}"
    free = shutil.disk_usage(store.parent if store.parent.exists() else tmp_path).free
    eng = ApptainerEngine(store=store, min_free=free + 2**40)
    with pytest.raises(EngineError) as exc:
        eng.build_image(spec_for(all_targets(pythons=("3.11",))[0]), lambda m: None)
    assert str(store) in exc.value.message and "GiB free" in exc.value.message
    assert "CBUILD_APPTAINER_IMAGES" in exc.value.fix
    shutil.rmtree(store, ignore_errors=True)


def test_cli_images_build_with_apptainer(apptainer, sifs, apptainer_env) -> None:
    env = {**os.environ, **apptainer_env}
    res = subprocess.run(
        # The 3.11 CPU targets of `sifs`: the CPython and CUDA layers are other tests' cost.
        [sys.executable, "-m", "builder", "images", "build", "--engine", "apptainer", "--json"]
        + [a for tid in sifs for a in ("--target", tid)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    rows = {r["target"]: r for r in json.loads(res.stdout)}
    assert {t: r["tag"] for t, r in rows.items()} == sifs
    assert not any(r["built"] for r in rows.values())


def test_stop_all_ends_this_engines_runs(apptainer, sifs, tmp_path) -> None:
    """What Ctrl-C does: the engine's running containers end at once, nothing is left."""
    import threading

    results = []
    spec = RunSpec(image=sifs["gentoo2023-generic"], command=["sleep", "120"])
    worker = threading.Thread(target=lambda: results.append(apptainer.run(spec, tmp_path / "l")))
    t0 = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not apptainer.stop_all():
        time.sleep(0.5)
    worker.join(timeout=30)
    assert not worker.is_alive() and time.monotonic() - t0 < 60
    assert results and results[0].exit_code != 0
    mark = f"{apptainer.store / 'run' / apptainer.session}-"
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if mark in _read(p)]
    assert left == []
    assert not list((apptainer.store / "run").glob(f"{apptainer.session}-*"))


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _ifaces(output: str) -> set[str]:
    return {ln.split(":")[0].strip() for ln in output.splitlines() if ":" in ln[:12]}


def test_step_printing_a_network_error_is_its_own_failure(apptainer, sifs, tmp_path) -> None:
    """A step whose output looks like Apptainer's refusal is not rerun with the host's network:
    `true` under the same isolation shows Apptainer does not refuse it."""
    log = tmp_path / "log"
    fake = "echo 'FATAL:   container creation failed: network requires root'; exit 3"
    res = apptainer.run(RunSpec(sifs["gentoo2023-generic"], ["sh", "-c", fake]), log)
    assert res.exit_code == 3 and "network requires root" in res.output
    assert apptainer.network_isolated is True
    assert log.read_text().count("$ sh -c") == 1  # not rerun


def _refusing_engine(allow: bool):
    """An engine Apptainer really refuses isolation to: as a user without --fakeroot, any
    network but `none` is refused (`none` never is, in Apptainer >= 1.1 without setuid)."""
    from builder.engines.apptainer import ApptainerEngine

    eng = ApptainerEngine(allow_host_network=allow)
    eng._probe()
    eng.fakeroot, eng.isolation = False, "bridge"
    return eng


def test_refused_isolation_fails_clearly_without_the_option(apptainer, sifs, tmp_path) -> None:
    eng = _refusing_engine(allow=False)
    with pytest.raises(EngineError) as exc:
        eng.run(RunSpec(sifs["gentoo2023-generic"], ["cat", "/proc/net/dev"]), tmp_path / "log")
    assert "refuses `--network none`" in exc.value.message
    assert "--allow-host-network" in exc.value.fix and "network_isolated" in exc.value.fix
    assert eng.network_isolated is True  # nothing ran with the host's network
    assert "Inter-|" not in (tmp_path / "log").read_text()


def test_host_network_only_when_allowed_and_then_said(apptainer, sifs, tmp_path) -> None:
    eng = _refusing_engine(allow=True)
    log = tmp_path / "log"
    res = eng.run(RunSpec(sifs["gentoo2023-generic"], ["cat", "/proc/net/dev"]), log)
    assert res.ok, res.output
    assert _ifaces(res.output) - {"lo"}  # the host's interfaces: not isolated
    assert eng.network_isolated is False  # what place.py writes into each manifest
    assert "network NOT isolated" in eng.describe()
    assert "the manifest records it" in log.read_text()
