"""The level test covers every process the test starts, with the real engine and real QEMU.

tests/fixtures/levelchild executes ADX (`adcx`), which is in no x86-64 level: the host runs it,
QEMU's exact x86-64-v3 model raises SIGILL. Each way a test can start a process (a child through
`sys.executable`, a console script, a `multiprocessing` spawn worker, a program shipped in the
wheel) must be reported as an ISA leak naming the level; importing alone must pass.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.targets.cputest import plan_here
from builder.targets.levels import level
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "levelchild"
TARGET = "gentoo2023-x86-64-v3"

CASES = {
    "child through sys.executable": (
        "python -c 'import subprocess, sys; "
        'subprocess.run([sys.executable, "-c", "import levelchild; levelchild.adx(1)"], '
        "check=True)'"
    ),
    "console script": "levelchild-adx",
    "multiprocessing spawn worker": (
        "python -c 'import multiprocessing as mp, levelchild\n"
        'if __name__ == "__main__":\n'
        '    p = mp.get_context("spawn").Process(target=levelchild.adx, args=(1,))\n'
        "    p.start(); p.join(); raise SystemExit(p.exitcode)'"
    ),
    "program shipped in the wheel": (
        "python -c 'import levelchild, subprocess; "
        "subprocess.run([levelchild.PROGRAM], check=True)'"
    ),
}


def sdist(dest: Path) -> Path:
    top = "levelchild-0.1.0"
    out = dest / f"{top}.tar.gz"
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(FIXTURE.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                data = p.read_bytes()
                info = tarfile.TarInfo(f"{top}/{p.relative_to(FIXTURE).as_posix()}")
                info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                tar.addfile(info, io.BytesIO(data))
    return out


def run(engine, tmp: Path, cache: Path, command: str) -> RunReport:
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "levelchild.toml").write_text(
        '[package]\nname = "levelchild"\nimport_names = ["levelchild"]\n\n'
        f"[test]\ncommands = [{json.dumps(command)}]\n"
    )
    req = WheelRequest(
        "levelchild",
        "0.1.0",
        tuple(resolve([TARGET])),
        tmp / "wheelhouse",
        cache,
        recipes,
        sdist=sdist(tmp / "sdist"),
    )
    return Pipeline(engine, lambda t, m: None).run(req)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if plan_here(level("x86-64-v3")).mode != "qemu":
        pytest.fail(f"x86-64-v3 is not tested under QEMU here: {plan_here(level('x86-64-v3'))}")
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("case", list(CASES))
def test_every_process_runs_at_the_level(engine, cache, tmp_path, case: str) -> None:
    report = run(engine, tmp_path, cache, CASES[case])
    r = report.results[0]
    assert r.status == "isa-leak", f"{case}: {r.status}: {r.test_detail}"
    assert "x86-64-v3" in r.test_detail and "command 1" in r.test_detail
    assert not report.ok and not (tmp_path / "wheelhouse").exists()


def test_importing_alone_passes_and_says_every_process(engine, cache, tmp_path) -> None:
    report = run(engine, tmp_path, cache, "python -c 'import levelchild'")
    r = report.results[0]
    assert r.status == "tested", r.test_detail
    assert "every process" in r.test_how and "every process" in r.test_detail


@pytest.mark.parametrize(
    "broken,what",
    [
        ("unshare", "unshare -Urm (user and mount namespaces): unshare: Operation not permitted"),
        ("cc", "cc -static-pie could not build the QEMU launcher: cc: Operation not permitted"),
    ],
)
def test_setup_refused_is_not_tested_with_why(engine, tmp_path, broken: str, what: str) -> None:
    """Where the engine refuses what the private binfmt_misc needs (here a stand-in that fails
    as a seccomp refusal does), the level is not tested, with the reason: never run natively."""
    from builder.engines.base import Mount, RunSpec
    from builder.images.paths import QEMU_PATH
    from builder.images.scripts import under_level
    from builder.providers import spec_for
    from builder.targets.cputest import interpret, usable_qemu

    target = resolve([TARGET])[0]
    image = engine.build_image(spec_for(target), lambda *a: None)
    fake = f"printf '#!/bin/sh\\necho \"{broken}: Operation not permitted\" >&2; exit 1\\n'"
    script = "\n".join(
        [
            f"mkdir -p /tmp/fake && {fake} > /tmp/fake/{broken} && chmod +x /tmp/fake/{broken}",
            "export PATH=/tmp/fake:$PATH",
            *under_level(target.cpu_level.qemu_cpu, "echo RAN-NATIVELY\n"),
        ]
    )
    res = engine.run(
        RunSpec(image, ["sh", "-c", script], (Mount(usable_qemu()[0], QEMU_PATH),)),
        tmp_path / "log",
    )
    assert res.exit_code == 125 and "RAN-NATIVELY" not in res.output, res.output
    plan = plan_here(target.cpu_level)
    verdict = interpret(res.exit_code, res.output, plan, target.cpu_level)
    assert verdict.status == "not-run", verdict.detail
    assert verdict.detail.startswith(f"not tested: could not run every process under QEMU: {what}")
    assert "Linux >= 6.7" in verdict.detail
