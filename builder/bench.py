"""Benchmarks (`just bench`): each figure is a ratio of two things measured side by side in
the same run, on the same machine, with warm images and a warm download cache."""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from builder import pypi, steps
from builder.engines.base import Mount, RunSpec
from builder.engines.docker import DockerEngine
from builder.imagespec import spec_for
from builder.pipeline import CA_PATH, Pipeline, WheelRequest, default_cache, host_ca_bundle
from builder.targets import resolve

REPO = Path(__file__).resolve().parent.parent
BENCH_TARGET = "gentoo2023-x86-64-v3"


def _bare_pip_wheel(engine: DockerEngine, image: str, sdist: Path, work: Path) -> float:
    """What a person would type: `pip wheel --no-deps SDIST` in the same image (network on for
    its isolated build environment), timed from container start to exit."""
    out = work / "bare-out"
    out.mkdir(parents=True)
    ca = host_ca_bundle()
    script = f"python3 -m pip wheel --no-deps -w /cbuild/out {steps.IN_DIR}/{sdist.name}"
    spec = RunSpec(
        image=image,
        command=["sh", "-c", script],
        network=True,
        mounts=(
            Mount(sdist.parent, steps.IN_DIR),
            Mount(out, "/cbuild/out", False),
            *((Mount(ca, CA_PATH),) if ca else ()),
        ),
        env={"PIP_CERT": CA_PATH} if ca else {},
    )
    t0 = time.monotonic()
    res = engine.run(spec, work / "bare.log")
    seconds = time.monotonic() - t0
    if not res.ok or not list(out.glob("*.whl")):
        raise RuntimeError(f"bare pip wheel failed; see {work / 'bare.log'}")
    return seconds


def overhead(
    engine: DockerEngine, package: str, version: str, sdist: Path | None, recipes: Path
) -> dict[str, Any]:
    target = resolve([BENCH_TARGET])[0]
    image = engine.build_image(spec_for(target), lambda m: None)  # warm, not timed
    cache = default_cache()
    with tempfile.TemporaryDirectory(prefix="cbuild-bench-") as tmp:
        work = Path(tmp)
        if sdist is None:
            rel = pypi.release_info(package, version)
            sdist = pypi.download(rel.sdist_url, rel.sdist_sha256, cache / "sdists")
        req = WheelRequest(
            package,
            version,
            (target,),
            work / "wheelhouse",
            cache,
            recipes,
            sdist=sdist if sdist.parent != cache / "sdists" else None,
        )
        t0 = time.monotonic()
        report = Pipeline(engine, lambda t, m: None).run(req)
        cbuild_s = time.monotonic() - t0
        if not report.ok:
            raise RuntimeError(f"cbuild run failed: {report.error}")
        bare_s = _bare_pip_wheel(engine, image, sdist, work)
    r = report.results[0]
    build_s = r.seconds.get("build", 0.0)
    return {
        "package": f"{package}=={version}",
        "target": BENCH_TARGET,
        "bare_pip_wheel_s": round(bare_s, 2),
        "cbuild_total_s": round(cbuild_s, 2),
        "cbuild_build_step_s": round(build_s, 2),
        "cbuild_test_step_s": round(r.seconds.get("test", 0.0), 2),
        # The build alone against the bare build: what cbuild adds to compiling.
        "build_step_ratio": round(build_s / bare_s, 3),
        # The whole job (fetch, offline build, repair, emulated test, place) against the bare
        # build, which neither pins, isolates, tests nor places anything.
        "total_ratio": round(cbuild_s / bare_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    ap.add_argument("--skip-biopython", action="store_true")
    args = ap.parse_args()
    from tests.conftest import make_sdist  # the C-extension fixture, as the tests build it

    engine = DockerEngine()
    results: dict[str, Any] = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "engine": engine.describe(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        fixture = make_sdist(Path(tmp))
        results["overhead_fixture"] = overhead(
            engine, "isafixture", "0.1.0", fixture, REPO / "tests" / "fixtures" / "recipes"
        )
    if not args.skip_biopython:
        results["overhead_biopython"] = overhead(
            engine, "biopython", "1.85", None, REPO / "recipes"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results.items():
        if name.startswith("overhead"):
            print(
                f"{row['package']:22} bare pip wheel {row['bare_pip_wheel_s']:6.1f} s | cbuild "
                f"build step {row['cbuild_build_step_s']:6.1f} s (x{row['build_step_ratio']}) "
                f"| cbuild whole job {row['cbuild_total_s']:6.1f} s (x{row['total_ratio']})"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
