"""Benchmarks (`just bench`): each figure is a ratio of two things measured side by side in
the same run, on the same machine, with warm images and a warm download cache."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from builder.cache import Cache, default_cache
from builder.engines import get_engine
from builder.engines.base import Engine, Mount, RunSpec
from builder.images.paths import CA_PATH, IN_DIR, OUT_DIR
from builder.pipeline.fetch import host_ca_bundle
from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.providers import spec_for
from builder.recipes import BUILTIN_RECIPES
from builder.sources import pypi
from builder.targets.model import resolve

REPO = Path(__file__).resolve().parents[2]
BENCH_TARGET = "gentoo2023-x86-64-v3"
BENCH_PYTHONS = ("3.11",)  # the levels' figures on one Python: comparable with earlier runs


def _bare_pip_wheel(engine: Engine, image: str, sdist: Path, work: Path) -> float:
    """What a person would type: `pip wheel --no-deps SDIST` in the same image (network on for
    its isolated build environment), timed from container start to exit."""
    out = work / "bare-out"
    out.mkdir(parents=True)
    ca = host_ca_bundle()
    script = f"python3 -m pip wheel --no-deps -w {OUT_DIR} {IN_DIR}/{sdist.name}"
    spec = RunSpec(
        image=image,
        command=["sh", "-c", script],
        network=True,
        mounts=(
            Mount(sdist.parent, IN_DIR),
            Mount(out, OUT_DIR, False),
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
    engine: Engine, package: str, version: str, sdist: Path | None, recipes: Path
) -> dict[str, Any]:
    target = resolve([BENCH_TARGET])[0]
    image = engine.build_image(spec_for(target), lambda m: None)  # warm, not timed
    cache = default_cache()
    with tempfile.TemporaryDirectory(prefix="cbuild-bench-") as tmp:
        work = Path(tmp)
        if sdist is None:
            rel = pypi.release_info(package, version)
            sdist = pypi.download(rel.sdist_url, rel.sdist_sha256, Cache(cache).sdists)
        req = WheelRequest(
            package,
            version,
            (target,),
            work / "wheelhouse",
            cache,
            recipes,
            sdist=sdist if sdist.parent != Cache(cache).sdists else None,
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


class CountingEngine:
    """The real engine, counting what it is asked to do (a no-op rerun must ask nothing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.calls = engine, 0

    def __getattr__(self, name: str) -> Any:
        self.calls += 1
        return getattr(self.engine, name)


def parallel_and_noop(
    engine: Engine, package: str, version: str, sdist: Path | None, recipes: Path
) -> dict[str, Any]:
    """--all-targets one at a time vs --jobs 2, then a rerun of the same inputs (no-op)."""
    from builder.targets.model import all_targets

    cache = default_cache()
    out: dict[str, Any] = {"package": f"{package}=={version}"}
    with tempfile.TemporaryDirectory(prefix="cbuild-bench-") as tmp:
        for jobs in (1, 2):
            req = WheelRequest(
                package,
                version,
                tuple(all_targets(pythons=BENCH_PYTHONS)),
                Path(tmp) / f"wh{jobs}",
                cache,
                recipes,
                sdist=sdist,
                jobs=jobs,
                rebuild=True,
            )
            t0 = time.monotonic()
            report = Pipeline(engine, lambda t, m: None).run(req)
            out[f"jobs{jobs}_s"] = round(time.monotonic() - t0, 2)
            if not report.ok:
                raise RuntimeError(f"cbuild run failed: {report.error}")
        counting = CountingEngine(engine)
        noop = WheelRequest(
            package,
            version,
            tuple(all_targets(pythons=BENCH_PYTHONS)),
            Path(tmp) / "wh2",
            cache,
            recipes,
            sdist=sdist,
            jobs=2,
        )
        t0 = time.monotonic()
        report = Pipeline(counting, lambda t, m: None).run(noop)
        out["noop_rerun_s"] = round(time.monotonic() - t0, 3)
        out["noop_engine_calls"] = counting.calls
        out["noop_statuses"] = sorted({r.status for r in report.results})
    out["jobs2_over_jobs1"] = round(out["jobs2_s"] / out["jobs1_s"], 3)
    out["noop_over_jobs2"] = round(out["noop_rerun_s"] / out["jobs2_s"], 4)
    return out


def python_layer(engine: Engine, python: str = "3.13") -> dict[str, Any]:
    """The one-time cost of a Python built from source (its image layer, cold: a marker line
    no cache holds), then the image of a second level on the same layer: what every later
    level and every later build pays instead."""
    from dataclasses import replace

    marker = f": cbuild bench {time.time_ns()}"
    row: dict[str, Any] = {"python": python}
    for key, t in zip(
        ("layer_cold_s", "second_level_s"),
        resolve([BENCH_TARGET, "gentoo2023-x86-64-v4"], pythons=(python,)),
        strict=True,
    ):
        spec = spec_for(t)
        layer = replace(spec.layers[0], script=(*spec.layers[0].script, marker))
        spec = replace(spec, name=f"bench-{spec.name}", layers=(layer,))
        t0 = time.monotonic()
        engine.build_image(spec, lambda m: None)
        row[key] = round(time.monotonic() - t0, 1)
        row.setdefault("target_first", t.id)
    row["second_over_cold"] = round(row["second_level_s"] / row["layer_cold_s"], 4)
    return row


def image_check(engine: Engine) -> dict[str, Any]:
    """Deciding that an unchanged image definition needs no build, against starting one
    container that does nothing."""
    spec = spec_for(resolve([BENCH_TARGET])[0])
    engine.build_image(spec, lambda m: None)
    t0 = time.monotonic()
    engine.build_image(spec, lambda m: None)
    check_s = time.monotonic() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        engine.run(RunSpec(image=spec.tag, command=["true"]), Path(tmp) / "true.log")
        true_s = time.monotonic() - t0
    return {
        "check_s": round(check_s, 4),
        "container_true_s": round(true_s, 3),
        "check_over_container": round(check_s / true_s, 4),
    }


def isa_scan(size_mb: int) -> dict[str, Any]:
    """The static ISA scan on a large shared object, against `objdump -d` of the same file."""
    from builder.wheels.isascan import bench_scan, make_bench_elf

    with tempfile.TemporaryDirectory() as tmp:
        elf = make_bench_elf(Path(tmp) / "big.so", megabytes=size_mb)
        row = bench_scan(elf)
        if shutil.which("objdump"):
            t0 = time.monotonic()
            subprocess.run(["objdump", "-d", str(elf)], stdout=subprocess.DEVNULL, check=True)
            row["objdump_s"] = round(time.monotonic() - t0, 2)
            row["scan_over_objdump"] = round(row["seconds"] / row["objdump_s"], 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    ap.add_argument("--skip-biopython", action="store_true")
    ap.add_argument(
        "--skip-python-layer", action="store_true", help="no cold CPython build (minutes)"
    )
    ap.add_argument("--scan-mb", type=int, default=100)
    ap.add_argument("--engine", default="docker", help="docker, apptainer or auto")
    args = ap.parse_args()
    from tests.conftest import make_sdist  # the C-extension fixture, as the tests build it

    engine = get_engine(args.engine, print)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "engine": engine.describe(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fixture_recipes = REPO / "tests" / "fixtures" / "recipes"
    with tempfile.TemporaryDirectory() as tmp:
        fixture = make_sdist(Path(tmp))
        results["overhead_fixture"] = overhead(
            engine, "isafixture", "0.1.0", fixture, fixture_recipes
        )
        results["parallel_fixture"] = parallel_and_noop(
            engine, "isafixture", "0.1.0", fixture, fixture_recipes
        )
    if not args.skip_biopython:
        results["overhead_biopython"] = overhead(engine, "biopython", "1.85", None, BUILTIN_RECIPES)
        results["parallel_biopython"] = parallel_and_noop(
            engine, "biopython", "1.85", None, BUILTIN_RECIPES
        )
    if not args.skip_python_layer:
        results["python_layer"] = python_layer(engine)
    results["image_check"] = image_check(engine)
    results["isa_scan"] = isa_scan(args.scan_mb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"written to {args.out}")


def summary(results: dict[str, Any]) -> str:
    lines = []
    for name, row in results.items():
        if name.startswith("overhead"):
            lines.append(
                f"{row['package']:18} bare pip wheel {row['bare_pip_wheel_s']:5.1f} s | cbuild "
                f"build step {row['cbuild_build_step_s']:5.1f} s (x{row['build_step_ratio']}) "
                f"| whole job {row['cbuild_total_s']:5.1f} s (x{row['total_ratio']})"
            )
        if name.startswith("parallel"):
            lines.append(
                f"{row['package']:18} all targets one at a time {row['jobs1_s']:5.1f} s | "
                f"--jobs 2 {row['jobs2_s']:5.1f} s (x{row['jobs2_over_jobs1']}) | no-op rerun "
                f"{row['noop_rerun_s']:.2f} s, {row['noop_engine_calls']} engine calls"
            )
    if row := results.get("python_layer"):
        lines.append(
            f"Python {row['python']} layer built once: {row['layer_cold_s']:.0f} s cold; the "
            f"next level's image on it {row['second_level_s']:.1f} s "
            f"(x{row['second_over_cold']})"
        )
    ic, scan = results["image_check"], results["isa_scan"]
    lines.append(
        f"image definition check {ic['check_s'] * 1000:.0f} ms vs one empty container "
        f"{ic['container_true_s']:.2f} s (x{ic['check_over_container']})"
    )
    lines.append(
        f"ISA scan: {scan['bytes'] / 1e6:.0f} MB of code in {scan['seconds']:.1f} s = "
        f"{scan['mb_per_s']} MB/s"
        + (f" (objdump -d: {scan['objdump_s']} s)" if "objdump_s" in scan else "")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
