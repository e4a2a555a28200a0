"""The main job: fetch -> build (offline) -> repair -> test (offline, on the promised CPU level)
-> place -> manifest, for one package version and a set of targets.

Side effects live here and in the engine; the decisions (scripts, CPU-test plan, placement) are
pure functions in their own modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from builder.engines.base import Engine, Mount, RunSpec
from builder.errors import (
    BuildError,
    CbuildError,
    ConfigError,
    FetchError,
    PlacementError,
    TestFailure,
)
from builder.images import scripts as steps
from builder.images.spec import DEPS_DIR, OUT_DIR, QEMU_PATH, SRC_DIR, ImageSpec, spec_for
from builder.recipes.recipe import Recipe, load_recipe
from builder.sources import pypi
from builder.targets.cputest import CpuTestPlan, interpret, plan_here, qemu_binary
from builder.targets.model import Target
from builder.wheelhouse import placement
from builder.wheels import edit as wheeledit
from builder.wheels import repair

# Network failures look like this in pip's and setuptools' output.
_NETWORK_SIGNS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
    "Could not resolve host",
    "No matching distribution found",
)

TEST_FAILED = frozenset({"failed", "isa-leak"})  # statuses of a wheel that failed its test
Progress = Callable[[str, str], None]  # (target id or "", message)


@dataclass
class TargetResult:
    target: Target
    status: str = "pending"  # built | tested | not-tested | build-failed | failed | isa-leak
    wheel: Path | None = None
    sha256: str = ""
    content_digest: str = ""
    is_pure: bool = False
    test_how: str = ""
    test_detail: str = ""
    build_log: Path | None = None
    test_log: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    placed: str | None = None
    reason: str = ""
    source_date_epoch: int = 0
    # Provenance for the manifest: the build's environment as given, facts probed in the
    # image (compiler, Python), the build key, and the target the wheel was really built on.
    build_env: dict[str, str] = field(default_factory=dict)
    build_facts: dict[str, Any] = field(default_factory=dict)
    build_key: str = ""
    built_on: str = ""

    def adopt(self, built: TargetResult) -> None:
        """Take another target's pure wheel: built once, tested on every target."""
        self.wheel, self.sha256, self.is_pure = built.wheel, built.sha256, built.is_pure
        self.content_digest, self.build_log = built.content_digest, built.build_log
        self.source_date_epoch, self.status = built.source_date_epoch, "built"
        self.build_env, self.build_facts = built.build_env, built.build_facts
        self.build_key, self.built_on = built.build_key, built.built_on
        self.reason = f"pure wheel: built once on {built.target.id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.id,
            "status": self.status,
            "wheel": self.wheel.name if self.wheel else None,
            "sha256": self.sha256,
            "tested": self.test_how,
            "test_detail": self.test_detail,
            "placed": self.placed,
            "reason": self.reason,
            "build_log": str(self.build_log) if self.build_log else None,
            "test_log": str(self.test_log) if self.test_log else None,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


@dataclass
class RunReport:
    package: str
    version: str
    results: list[TargetResult]
    lock: list[dict[str, Any]]
    placed: list[Path]
    workdir: Path
    ok: bool
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0, or why nothing was exported: a failed test or ISA leak, else a failed build."""
        if self.ok:
            return 0
        if any(r.status in TEST_FAILED for r in self.results):
            return TestFailure.exit_code
        return BuildError.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "ok": self.ok,
            "error": self.error,
            "workdir": str(self.workdir),
            "targets": [r.as_dict() for r in self.results],
            "placed": [str(p) for p in self.placed],
            "lock": self.lock,
        }


@dataclass(frozen=True)
class WheelRequest:
    package: str
    version: str
    targets: tuple[Target, ...]
    wheelhouse: Path
    cache: Path
    recipes_dir: Path
    force: bool = False
    strict: bool = False
    sdist: Path | None = None  # a local source instead of PyPI's
    jobs: int = 1  # targets built and tested at once
    ccache: bool = False  # a compiler cache per target, kept in the cache folder
    rebuild: bool = False  # ignore a recorded run with the same build keys
    # A rebuild (cbuild rebuild/verify): exactly these sdist and build inputs, each checked
    # against its sha256, instead of resolving them again.
    pinned: pypi.Lock | None = None
    # Wheel folders the runtime fetch reads before the index, in this order: the wheelhouse
    # folders a node's pip reads, so that a dependency held (or just built) there is the one
    # the test installs, including one that no index has.
    find_links: tuple[Path, ...] = ()


CA_PATH = "/cbuild/ca-bundle.crt"
STORE_PATH = "/cbuild/store"
CCACHE_PATH = "/cbuild/ccache"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LINKS_PATH = "/cbuild/links"  # WheelRequest.find_links, mounted read-only as 0, 1, ...


def host_ca_bundle() -> Path | None:
    """The trust store the host's pip uses, handed to networked steps so that fetching works
    behind a TLS-inspecting proxy exactly as on the host. CBUILD_CA_BUNDLE overrides."""
    for var in ("CBUILD_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


_NATIVE_SUFFIXES = (
    ".c",
    ".cc",
    ".cpp",
    ".cxx",
    ".h",
    ".hpp",
    ".f",
    ".f90",
    ".pyx",
    ".rs",
    ".cu",
    ".go",
)
_NATIVE_FILES = ("CMakeLists.txt", "meson.build", "Cargo.toml")


def has_native_sources(sdist: Path) -> bool:
    """Whether the sdist holds anything a compiler reads; without any, the wheel is the same
    for every target and is built once."""
    import tarfile
    import zipfile

    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as zf:
            names = zf.namelist()
    else:
        with tarfile.open(sdist) as tf:
            names = tf.getnames()
    return any(
        n.lower().endswith(_NATIVE_SUFFIXES) or n.rsplit("/", 1)[-1] in _NATIVE_FILES for n in names
    )


def target_spec(recipe: Recipe, target: Target, ccache: bool = False) -> ImageSpec:
    """The image a recipe builds a target in: the target's, plus the recipe's apt packages
    (and ccache when asked for: its own image, so the default images stay as they are)."""
    return spec_for(target, (*recipe.for_target(target).apt, *(("ccache",) if ccache else ())))


def build_key(
    recipe: Recipe, lock: list[pypi.LockEntry], target: Target, ccache: bool = False
) -> str:
    """The hash of everything that decides a build's bits: the recipe as resolved, the pinned
    inputs, the image definition, the target and its flags, and the step scripts' version."""
    payload = {
        # Where the recipe and its patches lie does not change the bits; what they say does.
        "recipe": _plain(
            {
                k: v
                for k, v in asdict(recipe).items()
                if k not in ("path", "patches_dir") and not k.startswith("_")
            }
        ),
        "patches": [pypi.sha256_of(p) for p in recipe.patch_files if p.is_file()],
        "inputs": sorted(
            (e.kind, e.filename, e.sha256) for e in lock if e.kind in ("sdist", "build")
        ),
        "image": target_spec(recipe, target, ccache).hash,
        "target": target.as_dict(),
        "steps": steps.STEPS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready, keys as strings, order fixed: a stable hash input from any dataclass tree."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def run_key(keys: dict[str, str], wheelhouse: Path) -> str:
    text = json.dumps([sorted(keys.items()), str(wheelhouse)])
    return hashlib.sha256(text.encode()).hexdigest()


def _record_run(
    req: WheelRequest, keys: dict[str, str], lock: list[pypi.LockEntry], report: RunReport
) -> None:
    """What the next run needs to say "up to date" without a container or the network."""
    name = f"{canonicalize_name(req.package)}-{req.version}.json"
    pinned = pypi.Lock(tuple(e for e in lock if e.kind in ("sdist", "build")))
    _write_atomic(req.cache / "locks" / name, pinned.to_json())
    record = {
        "package": report.package,
        "version": report.version,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "lock": report.lock,
        "placed": {str(p.relative_to(req.wheelhouse)): pypi.sha256_of(p) for p in report.placed},
        "targets": {
            r.target.id: {
                "sha256": r.sha256,
                "placed": r.placed,
                "tested": r.test_how,
                "status": r.status,
            }
            for r in report.results
        },
    }
    _write_atomic(
        req.cache / "runs" / f"{run_key(keys, req.wheelhouse)}.json",
        json.dumps(record, indent=2) + "\n",
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def new_workdir(folder: Path, keep: int = 3) -> Path:
    """A fresh work folder for this run (runs of the same package never share one), beside
    the last `keep` runs' folders, whose logs the messages of those runs point at."""
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:1].isdigit())
    for p in old[: max(0, len(old) - keep + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    work = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (work / "logs").mkdir(parents=True)
    return work


def default_cache() -> Path:
    return Path(os.environ.get("CBUILD_CACHE", Path.home() / ".cache" / "cbuild"))


def check_wheelhouse_writable(wheelhouse: Path) -> None:
    probe = wheelhouse
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PlacementError(
            f"wheelhouse {wheelhouse} is not writable ({probe} is "
            f"{'not a folder' if not probe.is_dir() else 'read-only'})",
            fix="pass --wheelhouse DIR with a folder you can write to",
        )


class Pipeline:
    def __init__(self, engine: Engine, progress: Progress) -> None:
        self.engine = engine
        self.progress = progress

    def _step(self, tid: str, msg: str) -> None:
        self.progress(tid, msg)

    # --- the job --------------------------------------------------------------------------------
    def run(self, req: WheelRequest) -> RunReport:
        check_wheelhouse_writable(req.wheelhouse)
        recipe = load_recipe(req.package, req.version, req.recipes_dir)
        if excluded := [t.id for t in req.targets if not recipe.builds_for_python(t.python)]:
            raise ConfigError(
                f"{req.package}'s recipe builds for Python {recipe.pythons}, not for the Python "
                f"of {', '.join(excluded)}",
                fix="pick targets with a Python the recipe allows, or widen [package] pythons",
            )
        # A pinned rebuild's source is the locked file, wherever the recipe says it came from.
        local = req.sdist is not None or req.pinned is not None
        if gaps := sorted(
            {g for t in req.targets for g in recipe.for_target(t).not_built_yet(local)}
        ):
            raise ConfigError(
                f"{req.package}'s recipe needs what cbuild does not do yet: {'; '.join(gaps)}",
                fix="build from a local source with --sdist, or drop the field from the recipe",
            )
        if not req.rebuild and (done := self._up_to_date(req, recipe)):
            return done
        release, sdist = self._source(req)
        # Cached by an older cbuild as 0600: an engine whose container user is not ours
        # (Apptainer's) must read it like any input.
        sdist.chmod(sdist.stat().st_mode | 0o444)
        facts = pypi.sdist_facts(sdist)
        work = new_workdir(req.cache / "work" / f"{release.name}-{release.version}")
        results = [TargetResult(t) for t in req.targets]
        lock = [
            pypi.LockEntry(
                canonicalize_name(release.name),
                release.version,
                sdist.name,
                release.sdist_sha256,
                "sdist",
                release.sdist_url,
            )
        ]

        images = {}
        for t in req.targets:
            self._step(t.id, "image")
            images[t.id] = self.engine.build_image(
                target_spec(recipe, t, req.ccache), lambda m, i=t.id: self._step(i, m)
            )

        first = images[req.targets[0].id]
        build_requires = [*facts.build_requires, *recipe.build_requires]
        if req.pinned is not None:
            build_deps = self._fetch_pinned(
                first, req.pinned.of_kind("build"), work / "deps-build", req.cache, work / "logs"
            )
        else:
            build_deps = self._fetch(
                first, build_requires, work / "deps-build", req.cache, work / "logs" / "fetch.log"
            )
        lock += pypi.lock_entries_from_dir(build_deps, "build")
        keys = {t.id: build_key(recipe.for_target(t), lock, t, req.ccache) for t in req.targets}

        def build(r: TargetResult) -> None:
            r.build_key = keys[r.target.id]
            self._build(
                r,
                images[r.target.id],
                recipe,
                sdist,
                facts,
                build_requires,
                build_deps,
                work,
                req.jobs,
                req.cache / "ccache" / r.target.id if req.ccache else None,
            )

        # Runtime dependencies are fetched once, for the first wheel whose test comes up.
        rt_guard, rt_deps, rt_fetched = threading.Lock(), work / "deps-runtime", []

        def runtime_deps(r: TargetResult) -> Path:
            with rt_guard:  # a failed fetch raises here for every test that needs it
                if not rt_fetched:
                    self._fetch(
                        first,
                        [f"{steps.IN_DIR}/{r.wheel.name}", *recipe.test_requires],
                        rt_deps,
                        req.cache,
                        work / "logs" / "fetch.log",
                        mounts=[r.wheel.parent],
                        links=req.find_links,
                    )
                    dist = r.wheel.name.split("-")[0]
                    for p in rt_deps.iterdir():  # the wheel under test came along: not a dep
                        if p.name.split("-")[0] == dist:
                            p.unlink()
                    lock.extend(pypi.lock_entries_from_dir(rt_deps, "runtime"))
                    rt_fetched.append(True)
            return rt_deps

        def test(r: TargetResult) -> None:
            self._test(r, images[r.target.id], recipe, runtime_deps(r), work)

        # A source with no native code builds once; every target then tests that one wheel.
        if not has_native_sources(sdist) and len(results) > 1:
            build(results[0])
            if results[0].is_pure:
                for r in results[1:]:
                    r.adopt(results[0])
                self._build_and_test(build, test, [], results, req.jobs)
            else:
                self._build_and_test(build, test, results[1:], results[:1], req.jobs)
        else:
            self._build_and_test(build, test, results, [], req.jobs)
        (work / "lock.json").write_text(pypi.Lock(tuple(lock)).to_json())

        report = RunReport(
            release.name, release.version, results, [asdict(e) for e in lock], [], work, ok=False
        )
        failed = [r for r in results if r.status in {"build-failed", *TEST_FAILED}]
        untested = [r for r in results if r.status == "not-tested"]
        if failed:
            report.error = (
                "; ".join(f"{r.target.id}: {r.status}: {r.test_detail or r.reason}" for r in failed)
                + " -- nothing was exported"
            )
            return report
        if req.strict and untested:
            report.error = (
                "--strict: not tested on "
                + ", ".join(r.target.id for r in untested)
                + " -- nothing was exported"
            )
            return report
        report.placed = self._place(req, results, release, lock, images, recipe)
        report.ok = True
        _record_run(req, keys, lock, report)
        return report

    def _build_and_test(
        self,
        build: Callable[[TargetResult], None],
        test: Callable[[TargetResult], None],
        to_build: list[TargetResult],
        built: list[TargetResult],
        jobs: int,
    ) -> None:
        """Build, then test, `jobs` at a time, each target's test queued as soon as its build
        is done (so a test overlaps the next build). Ctrl-C or an error stops the rest, and
        the engine removes this run's containers at once."""
        if jobs <= 1:
            for r in to_build:
                build(r)
            for r in [*built, *to_build]:
                if r.wheel:
                    test(r)
            return
        guard = threading.Lock()
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cbuild") as pool:
            tests = [pool.submit(test, r) for r in built if r.wheel]

            def build_then_test(r: TargetResult) -> None:
                build(r)
                if r.wheel:
                    with guard:
                        tests.append(pool.submit(test, r))

            builds = [pool.submit(build_then_test, r) for r in to_build]
            try:
                for f in builds:
                    f.result()
                for f in list(tests):  # complete: every build has queued its test
                    f.result()
            except BaseException:
                for f in [*builds, *tests]:
                    f.cancel()
                # The other workers are blocked on their containers: removing the
                # containers ends them now instead of when their builds finish.
                self.engine.stop_all()
                raise

    def _up_to_date(self, req: WheelRequest, recipe: Recipe) -> RunReport | None:
        """No container, no network: the lock of the last run pins the inputs; when every
        target's build key has a recorded run whose placed wheels are all still in the
        wheelhouse, bit for bit, there is nothing to do."""
        lock_file = req.cache / "locks" / f"{canonicalize_name(req.package)}-{req.version}.json"
        if not lock_file.is_file():
            return None
        lock = [
            e
            for e in pypi.Lock.from_json(lock_file.read_text()).entries
            if e.kind in ("sdist", "build")
        ]
        keys = {t.id: build_key(recipe.for_target(t), lock, t, req.ccache) for t in req.targets}
        record = req.cache / "runs" / f"{run_key(keys, req.wheelhouse)}.json"
        if not record.is_file():
            return None
        data = json.loads(record.read_text())
        for rel, sha in data["placed"].items():
            path = req.wheelhouse / rel
            if not path.is_file() or pypi.sha256_of(path) != sha:
                return None
        results = []
        for t in req.targets:
            row = data["targets"][t.id]
            r = TargetResult(
                t,
                status="up to date",
                sha256=row["sha256"],
                placed=row["placed"],
                test_how=row["tested"],
                reason=f"build key {keys[t.id][:16]} "
                f"unchanged since {data['when']}; --rebuild forces a build",
            )
            results.append(r)
        return RunReport(
            data["package"],
            data["version"],
            results,
            data["lock"],
            [req.wheelhouse / p for p in data["placed"]],
            req.cache,
            ok=True,
        )

    def _source(self, req: WheelRequest) -> tuple[pypi.Release, Path]:
        if req.pinned is not None:
            return self._pinned_source(req, req.pinned)
        if req.sdist is None:
            self._step("", f"PyPI: {req.package} {req.version}")
            release = pypi.release_info(req.package, req.version)
            return release, pypi.download(
                release.sdist_url, release.sdist_sha256, req.cache / "sdists"
            )
        # A local sdist (a fixture, a patched source): pinned by its own sha256.
        if not req.sdist.is_file():
            raise ConfigError(
                f"--sdist {req.sdist}: no such file",
                fix="pass the path of a .tar.gz or .zip source distribution",
            )
        sha = pypi.sha256_of(req.sdist)
        dest = req.cache / "sdists"
        dest.mkdir(parents=True, exist_ok=True)
        copy = dest / req.sdist.name
        if not copy.exists() or pypi.sha256_of(copy) != sha:
            shutil.copyfile(req.sdist, copy)
        release = pypi.Release(
            req.package,
            req.version,
            req.sdist.resolve().as_uri(),
            req.sdist.name,
            sha,
            None,
            datetime.fromtimestamp(req.sdist.stat().st_mtime, UTC),
        )
        return release, copy

    def _pinned_source(self, req: WheelRequest, pinned: pypi.Lock) -> tuple[pypi.Release, Path]:
        """The locked sdist, by sha256: --sdist when given, else the cache's copy, else its URL."""
        entries = pinned.of_kind("sdist")
        if len(entries) != 1:
            raise ConfigError(
                f"the pinned lock has {len(entries)} sdist entries, not one",
                fix="rebuild from a manifest written by `cbuild wheel`",
            )
        e = entries[0]
        dest = req.cache / "sdists"
        dest.mkdir(parents=True, exist_ok=True)
        copy = dest / e.filename
        if req.sdist is not None:
            if not req.sdist.is_file() or pypi.sha256_of(req.sdist) != e.sha256:
                raise FetchError(
                    f"--sdist {req.sdist} is not the locked {e.filename} (sha256 {e.sha256})",
                    fix="pass the sdist the wheel was built from, or leave --sdist out",
                )
            if not copy.is_file() or pypi.sha256_of(copy) != e.sha256:
                shutil.copyfile(req.sdist, copy)
        elif not copy.is_file() or pypi.sha256_of(copy) != e.sha256:
            if not e.url:
                raise FetchError(
                    f"the locked sdist {e.filename} has no URL and is not in {dest}",
                    fix=f"put the file (sha256 {e.sha256}) there or pass it with --sdist",
                )
            self._step("", f"fetch {e.filename} (locked)")
            try:
                copy = pypi.download(e.url, e.sha256, dest)
            except FetchError as exc:
                raise FetchError(
                    f"the locked sdist {e.filename} could not be had from {e.url}: {exc.message}",
                    fix=f"put the file (sha256 {e.sha256}) in {dest} or pass it with --sdist",
                ) from exc
        url = e.url or copy.resolve().as_uri()
        mtime = datetime.fromtimestamp(copy.stat().st_mtime, UTC)
        return pypi.Release(req.package, e.version, url, e.filename, e.sha256, None, mtime), copy

    def _fetch_pinned(
        self, image: str, entries: list[pypi.LockEntry], dest: Path, cache: Path, logs: Path
    ) -> Path:
        """Exactly the locked build inputs: from the wheel store when a file with the locked
        sha256 is there, else `name==version` through pip (no dependency resolution: the lock
        lists them all); every file is then checked against its sha256."""
        dest.mkdir(parents=True, exist_ok=True)
        store = cache / "wheels"
        missing = []
        for e in entries:
            have = store / e.filename
            if have.is_file() and pypi.sha256_of(have) == e.sha256:
                shutil.copyfile(have, dest / e.filename)
            else:
                missing.append(e)
        if missing:
            self._fetch(
                image,
                [f"{e.name}=={e.version}" for e in missing],
                dest,
                cache,
                logs / "fetch.log",
                extra=("--no-deps",),
            )
        got = {p.name: pypi.sha256_of(p) for p in dest.iterdir() if p.is_file()}
        wanted = {e.filename: e.sha256 for e in entries}
        problems = [
            f"{name}: not fetched"
            if name not in got
            else f"{name}: sha256 {got[name]}, the lock says {sha}"
            for name, sha in sorted(wanted.items())
            if got.get(name) != sha
        ] + [f"{name}: not in the lock" for name in sorted(set(got) - set(wanted))]
        if problems:
            raise FetchError(
                "the build inputs differ from the locked ones:\n    " + "\n    ".join(problems),
                fix="the index now serves other files for these pins; put the locked files "
                f"(by sha256) in the wheel store {store} to rebuild exactly",
            )
        return dest

    # --- steps ----------------------------------------------------------------------------------
    def _fetch(
        self,
        image: str,
        requirements: list[str],
        dest: Path,
        cache: Path,
        log: Path,
        mounts: list[Path] = (),
        extra: tuple[str, ...] = (),
        links: tuple[Path, ...] = (),
    ) -> Path:
        """Wheels for the image's Python, network on. Files fetched before come from the
        cache's wheel store (shared by targets and runs) instead of the network."""
        dest.mkdir(parents=True, exist_ok=True)
        store = cache / "wheels"
        store.mkdir(parents=True, exist_ok=True)
        if not requirements:
            return dest
        self._step("", f"fetch {', '.join(Path(r).name for r in requirements)}")
        ca = host_ca_bundle()
        ca_mounts = (Mount(ca, CA_PATH),) if ca else ()
        links = [d for d in links if d.is_dir()]
        link_args = [a for i in range(len(links)) for a in ("--find-links", f"{LINKS_PATH}/{i}")]
        res = self.engine.run(
            RunSpec(
                image=image,
                command=[
                    "sh",
                    "-c",
                    steps.fetch_wheels_script(
                        requirements,
                        "/cbuild/dl",
                        [*link_args, "--find-links", STORE_PATH, *extra],
                    ),
                ],
                mounts=(
                    Mount(dest, "/cbuild/dl", read_only=False),
                    Mount(store, STORE_PATH),
                    *(Mount(m, steps.IN_DIR) for m in mounts),
                    *(Mount(d, f"{LINKS_PATH}/{i}") for i, d in enumerate(links)),
                    *ca_mounts,
                ),
                env={"PIP_CERT": CA_PATH} if ca else {},
                network=True,
            ),
            log,
        )
        if not res.ok:
            raise BuildError(
                f"could not fetch {', '.join(requirements)} as wheels for the "
                f"target's Python:\n{_tail(res.output)}\n  log: {log}",
                fix="check the names and versions; a dependency that has no wheel "
                "must be built first (add it to the wheelhouse)",
            )
        for p in dest.glob("*.whl"):
            # Only the index's wheels are shared by runs: the wheel under test and a
            # wheelhouse's stay out, or another wheelhouse's runs would find them there.
            given = (*mounts, *links)
            if not (store / p.name).exists() and not any((d / p.name).exists() for d in given):
                shutil.copyfile(p, store / f".{p.name}.tmp")
                (store / f".{p.name}.tmp").replace(store / p.name)
        return dest

    def _build(
        self,
        r: TargetResult,
        image: str,
        recipe: Recipe,
        sdist: Path,
        facts: pypi.SdistFacts,
        build_requires: list[str],
        deps: Path,
        work: Path,
        jobs: int,
        ccache: Path | None = None,
    ) -> None:
        t = r.target
        tid = t.id
        recipe = recipe.for_target(t)  # the target's and accelerator's overrides
        out = work / "out" / tid
        out.mkdir(parents=True)
        r.build_log = work / "logs" / f"{tid}.build.log"
        flags = t.compiler_flags()
        prefix_map = f"-ffile-prefix-map={SRC_DIR}/{facts.top_folder}=/usr/src/{facts.top_folder}"
        env = {
            **flags,
            **{k: f"{flags[k]} {prefix_map}" for k in ("CFLAGS", "CXXFLAGS", "FFLAGS")},
            "SOURCE_DATE_EPOCH": str(facts.source_date_epoch),
            "PYTHONHASHSEED": "0",
            # Each of the `jobs` concurrent builds gets a fair share of the cores.
            **dict.fromkeys(
                ("MAX_JOBS", "CMAKE_BUILD_PARALLEL_LEVEL", "NPY_NUM_BUILD_JOBS"),
                str(max(1, (os.cpu_count() or 1) // max(1, jobs))),
            ),
            **recipe.env,
        }
        if ccache is not None:
            # Debian's masquerade folder puts ccache in front of gcc/g++ by name; objects come
            # out the same, from the cache or the compiler.
            ccache.mkdir(parents=True, exist_ok=True)
            env |= {"PATH": f"/usr/lib/ccache:{DEFAULT_PATH}", "CCACHE_DIR": CCACHE_PATH}
        self._step(tid, "build (network off)")
        t0 = time.monotonic()
        script = steps.build_script(
            sdist.name,
            facts.top_folder,
            build_requires,
            recipe.pip_args,
            patches=recipe.patches,
            pre_build=recipe.pre_build,
            post_build=recipe.post_build,
            version=recipe.version,
        )
        script = f"{BUILD_FACTS_PROBE}\n{script}"  # prints facts only; the bits do not change
        r.build_env, r.built_on = env, tid
        res = self.engine.run(
            RunSpec(
                image=image,
                command=["sh", "-c", script],
                env=env,
                mounts=(
                    Mount(sdist.parent, steps.IN_DIR),
                    Mount(deps, DEPS_DIR),
                    Mount(out, OUT_DIR, read_only=False),
                    *([Mount(recipe.patches_dir, steps.PATCHES_DIR)] if recipe.patches else []),
                    *([Mount(ccache, CCACHE_PATH, read_only=False)] if ccache else []),
                ),
                network=False,
            ),
            r.build_log,
        )
        r.seconds["build"] = time.monotonic() - t0
        r.build_facts = parse_build_facts(res.output)
        wheels = sorted(out.glob("*.whl"))
        if not res.ok or len(wheels) != 1:
            r.status = "build-failed"
            hint = ""
            if any(s in res.output for s in _NETWORK_SIGNS):
                hint = (
                    " -- the build tried to reach the network, which is off during builds; "
                    "add what it needs to the recipe's [build] requires"
                )
            r.reason = f"exit {res.exit_code}{hint}; log: {r.build_log}"
            r.test_detail = steps.patch_failure(res.output) or steps.failure_excerpt(res.output)
            return
        self._step(tid, "repair")
        fixed = repair.repair_wheel(
            wheels[0],
            work / "wheels" / tid,
            label=t.stack.local_label,
            tags=recipe.local_tags,
            source_date_epoch=facts.source_date_epoch,
        )
        if recipe.wheel_edits:  # the recipe's [wheel] requirement edits and name suffix
            fixed, _ = wheeledit.apply_to_repaired(
                fixed,
                add=recipe.add_requires,
                remove=recipe.remove_requires,
                update=recipe.update_requires,
                suffix=recipe.suffix,
            )
        r.wheel = fixed.path
        r.is_pure = fixed.is_pure
        r.sha256 = repair.wheel_sha256(fixed.path)
        r.content_digest = repair.wheel_content_digest(fixed.path)
        r.status = "built"
        r.source_date_epoch = facts.source_date_epoch

    def _test(self, r: TargetResult, image: str, recipe: Recipe, rt_deps: Path, work: Path) -> None:
        t = r.target
        recipe = recipe.for_target(t)
        qemu = qemu_binary()
        plan: CpuTestPlan = plan_here(t.cpu_level)
        r.test_how = plan.reason
        if plan.mode == "none":
            r.status = "not-tested"
            r.test_detail = f"not tested: {plan.reason}"
            return
        imports = recipe.import_names
        if imports is None:
            imports = repair.top_level_modules(r.wheel)
        script = steps.wheel_test_script(
            [r.wheel.name],
            imports,
            recipe.test_commands,
            recipe.test_requires,
            plan.qemu_cpu if plan.mode == "qemu" else None,
            python_code=recipe.test_python,
            pre_commands=recipe.test_pre_commands,
        )
        mounts = [Mount(r.wheel.parent, steps.IN_DIR), Mount(rt_deps, steps.RT_DEPS_DIR)]
        if plan.mode == "qemu":
            mounts.append(Mount(qemu, QEMU_PATH))
        r.test_log = work / "logs" / f"{t.id}.test.log"
        self._step(t.id, f"test ({plan.mode}, network off)")
        t0 = time.monotonic()
        res = self.engine.run(
            RunSpec(image=image, command=["sh", "-c", script], mounts=tuple(mounts), network=False),
            r.test_log,
        )
        r.seconds["test"] = time.monotonic() - t0
        verdict = interpret(res.exit_code, res.output, plan, t.cpu_level)
        if verdict.status == "passed":
            r.status = "tested"
            r.test_detail = (
                "passed under QEMU, exactly " + t.cpu_level.name
                if plan.mode == "qemu"
                else f"passed natively (host has {t.cpu_level.name} and more)"
            )
        else:
            r.status = verdict.status
            r.test_detail = (
                f"{verdict.detail} (step: {steps.failed_step(res.output)}; "
                f"log: {r.test_log})\n{_tail(res.output, 8)}"
            )

    def _place(
        self,
        req: WheelRequest,
        results: list[TargetResult],
        release: pypi.Release,
        lock: list[pypi.LockEntry],
        images: dict[str, str],
        recipe: Recipe,
    ) -> list[Path]:
        stack = req.targets[0].stack
        cands = [
            placement.Candidate(
                r.target.id, r.target.level_name, r.wheel, r.content_digest, r.is_pure
            )
            for r in results
            if r.wheel
        ]
        req.wheelhouse.mkdir(parents=True, exist_ok=True)
        decisions = placement.plan(
            cands, stack, placement.scan(req.wheelhouse, stack), force=req.force
        )
        by_target = {r.target.id: r for r in results}
        for d in decisions:
            res = by_target[d.target_id]
            res.placed, res.reason = d.folder, d.error or d.reason
        placed = placement.place(decisions, req.wheelhouse, cands)
        for d in decisions:
            if d.folder is None:
                continue
            res = by_target[d.target_id]
            manifest = _manifest(
                res,
                release,
                lock,
                images[res.target.id],
                self.engine,
                target_spec(recipe, res.target, req.ccache).hash,
            )
            manifest.update(_provenance(res, recipe))
            dest = req.wheelhouse / d.folder / f"{d.wheel_name}.json"
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.replace(dest)
        return placed


def _manifest(
    r: TargetResult,
    release: pypi.Release,
    lock: list[pypi.LockEntry],
    image: str,
    engine: Engine,
    spec_hash: str,
) -> dict[str, Any]:
    return {
        "package": release.name,
        "version": release.version,
        "target": r.target.as_dict(),
        "wheel": r.wheel.name,
        "sha256": r.sha256,
        "engine": engine.describe(),
        # False where the engine could not switch the network off (Apptainer refusing --network).
        "network_isolated": getattr(engine, "network_isolated", True),
        "image": image,
        "image_id": engine.image_id(image),
        "image_spec_hash": spec_hash,
        "provider": r.target.provider,
        "test": {"status": r.status, "how": r.test_how, "detail": r.test_detail},
        "source_date_epoch": r.source_date_epoch,
        "lock": [asdict(e) for e in lock],
    }


# Run before the build script, in the build's container: what compiled the wheel, as the
# manifest records it. One marked JSON line; a missing tool is null.
FACTS_MARK = "::cbuild-facts::"
_FACTS_CODE = f"""\
import json, platform, subprocess, sysconfig
def first(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except Exception:
        return None
print("{FACTS_MARK}" + json.dumps({{
    "python": platform.python_version(),
    "python_cflags": sysconfig.get_config_var("CFLAGS"),
    "glibc": platform.libc_ver()[1],
    "gcc": first("gcc", "--version"),
    "gxx": first("g++", "--version"),
    "gfortran": first("gfortran", "--version"),
    "ld": first("ld", "--version"),
}}))
"""
BUILD_FACTS_PROBE = f"python3 -c {shlex.quote(_FACTS_CODE)} || true"
# A compiler's command line in pip's verbose output: the flags the build really used.
_COMPILE_LINE = re.compile(r"^\s*(\S*-)?(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|gfortran)\s.*\s-c\s")


def parse_build_facts(output: str) -> dict[str, Any]:
    """The probe's facts, and the first compile command of the build log, when there is one."""
    facts: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith(FACTS_MARK):
            with contextlib.suppress(ValueError):
                facts = json.loads(line[len(FACTS_MARK) :])
            break
    compile_line = next((ln.strip() for ln in output.splitlines() if _COMPILE_LINE.match(ln)), None)
    if compile_line:
        facts["first_compile_command"] = compile_line
    return facts


def _provenance(r: TargetResult, recipe: Recipe) -> dict[str, Any]:
    """What `cbuild rebuild`/`verify` need beyond the rest of the manifest: the build as it ran
    (key, environment, compiler, Python) and the recipe, resolved and as written."""
    resolved = recipe.for_target(r.target)
    flags = r.build_env.get("CFLAGS")
    py_flags = r.build_facts.get("python_cflags")
    return {
        "build": {
            "key": r.build_key,
            "built_on": r.built_on or r.target.id,
            "steps_version": steps.STEPS_VERSION,
            "env": r.build_env,
            # The build script puts Python's own CFLAGS before the target's.
            "effective_cflags": f"{py_flags} {flags}" if py_flags and flags else flags,
            **{k: v for k, v in r.build_facts.items() if k != "python_cflags"},
            "python_cflags": py_flags,
        },
        "python": r.build_facts.get("python") or r.target.python,
        "recipe": {
            "resolved": resolved.as_dict(),
            "file": recipe.path.read_text() if recipe.path and recipe.path.is_file() else None,
            "patches": {
                name: path.read_text(errors="surrogateescape")
                for name, path in zip(resolved.patches, resolved.patch_files, strict=True)
                if path.is_file()
            },
        },
    }


def _tail(text: str, n: int = 20) -> str:
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-n:])


__all__ = [
    "Pipeline",
    "WheelRequest",
    "RunReport",
    "TargetResult",
    "default_cache",
    "CbuildError",
    "ConfigError",
]
