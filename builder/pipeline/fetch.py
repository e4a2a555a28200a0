"""The fetch step: the sdist (PyPI, a local file, or the pinned one of a rebuild) and wheels for
the image's Python (network on, in a container), through the cache's wheel store."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from packaging.utils import canonicalize_name

from builder.cache import Cache
from builder.engines.base import Engine, Mount, RunSpec
from builder.errors import BuildError, ConfigError, FetchError
from builder.files import copy_atomic, write_atomic
from builder.images import scripts as steps
from builder.images.paths import CA_PATH, DOWNLOAD_DIR, IN_DIR, LINKS_DIR, STORE_DIR
from builder.pipeline.model import WheelRequest
from builder.progress import TargetProgressFn
from builder.providers import get_provider
from builder.recipes import Recipe, Source
from builder.sources import git, pypi
from builder.sources import url as url_source
from builder.targets.model import Target


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
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as zf:
            names = zf.namelist()
    else:
        with tarfile.open(sdist) as tf:
            names = tf.getnames()
    return any(
        n.lower().endswith(_NATIVE_SUFFIXES) or n.rsplit("/", 1)[-1] in _NATIVE_FILES for n in names
    )


# --- the source -----------------------------------------------------------------------------------
def source(
    req: WheelRequest, progress: TargetProgressFn, recipe: Recipe | None = None
) -> tuple[pypi.Release, Path]:
    """The source archive to build and its release facts: pinned, the local file, or what the
    recipe's [source] names (PyPI's sdist, a git commit's archive, a URL's archive)."""
    sdists = Cache(req.cache).sdists
    if req.pinned is not None:
        return _pinned_source(req, req.pinned, progress)
    src = recipe.source if recipe is not None else None
    if req.sdist is None and src is not None and src.kind in ("git", "url"):
        return _recipe_source(req, src, progress)
    if req.sdist is None:
        pypi_name = src.pypi_name if src is not None and src.pypi_name else req.package
        progress("", f"PyPI: {pypi_name} {req.version}")
        release = pypi.release_info(pypi_name, req.version)
        return release, pypi.download(release.sdist_url, release.sdist_sha256, sdists)
    # A local sdist (a fixture, a patched source): pinned by its own sha256.
    if not req.sdist.is_file():
        raise ConfigError(
            f"--sdist {req.sdist}: no such file",
            fix="pass the path of a .tar.gz or .zip source distribution",
        )
    sha = pypi.sha256_of(req.sdist)
    sdists.mkdir(parents=True, exist_ok=True)
    copy = sdists / req.sdist.name
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


def _git_top(req: WheelRequest) -> str:
    """The top folder of a git archive, as an sdist's: `<name>-<version>`."""
    return f"{canonicalize_name(req.package)}-{req.version}"


def _recipe_source(
    req: WheelRequest, src: Source, progress: TargetProgressFn
) -> tuple[pypi.Release, Path]:
    """A git commit's archive or a URL's archive, locked like an sdist: by sha256, with the
    URL that gives the same bytes again (`git+REPO@COMMIT` for git)."""
    sdists = Cache(req.cache).sdists
    if src.kind == "git":
        progress("", f"git: {src.git} {src.rev}")
        got = git.fetch_archive(src.git, src.rev, sdists, _git_top(req), src.submodules)
        progress("", f"git: {src.rev} is commit {got.commit}")
        path, where, when = got.path, got.url, got.commit_time
        sha = pypi.sha256_of(path)
    else:
        progress("", f"fetch {src.url}")
        package, sha, where = canonicalize_name(req.package), src.sha256, src.url
        name = url_source.archive_name(where, sha, package, req.version, src.filename)
        path = url_source.fetch_archive(where, sha, sdists, name)
        when = path.stat().st_mtime
    if src.folder and (top := pypi.sdist_facts(path).top_folder) != src.folder:
        raise FetchError(
            f"{path.name} holds the folder {top!r}, not {src.folder!r} as [source] folder says",
            fix=f'set folder = "{top}" under [source], or drop the key',
        )
    release = pypi.Release(
        req.package, req.version, where, path.name, sha, None, datetime.fromtimestamp(when, UTC)
    )
    return release, path


def _pinned_source(
    req: WheelRequest, pinned: pypi.Lock, progress: TargetProgressFn
) -> tuple[pypi.Release, Path]:
    """The locked sdist, by sha256: --sdist when given, else the cache's copy, else its URL."""
    entries = pinned.of_kind("sdist")
    if len(entries) != 1:
        raise ConfigError(
            f"the pinned lock has {len(entries)} sdist entries, not one",
            fix="rebuild from a manifest written by `cbuild wheel`",
        )
    e = entries[0]
    dest = Cache(req.cache).sdists
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
        progress("", f"fetch {e.filename} (locked)")
        try:
            copy = _locked_copy(req, e, dest)
        except FetchError as exc:
            raise FetchError(
                f"the locked sdist {e.filename} could not be had from {e.url}: {exc.message}",
                fix=f"put the file (sha256 {e.sha256}) in {dest} or pass it with --sdist",
            ) from exc
    url = e.url or copy.resolve().as_uri()
    mtime = datetime.fromtimestamp(copy.stat().st_mtime, UTC)
    return pypi.Release(req.package, e.version, url, e.filename, e.sha256, None, mtime), copy


def _locked_copy(req: WheelRequest, e: pypi.LockEntry, dest: Path) -> Path:
    """The locked source again, by sha256: a git archive made anew from its commit (the same
    commit gives the same bytes), any other file downloaded from its URL."""
    if pinned := git.parse_lock_url(e.url):
        repo, commit, submodules = pinned
        got = git.fetch_archive(repo, commit, dest, _git_top(req), submodules)
        if (have := pypi.sha256_of(got.path)) != e.sha256:
            raise FetchError(f"the archive of {e.url} has sha256 {have}, the lock says {e.sha256}")
        return got.path
    return url_source.fetch_archive(e.url, e.sha256, dest, e.filename)


# --- wheels -----------------------------------------------------------------------------------
def fetch_wheels(
    engine: Engine,
    progress: TargetProgressFn,
    image: str,
    requirements: list[str],
    dest: Path,
    cache: Path,
    log: Path,
    mounts: list[Path] = (),
    extra: tuple[str, ...] = (),
    links: tuple[Path, ...] = (),
    target: Target | None = None,
) -> Path:
    """Wheels for the image's Python, network on. Files fetched before come from the
    cache's wheel store (shared by targets and runs) instead of the network. `target`: its
    provider runs the step (the stack's Python and pip configuration, where it has modules)."""
    dest.mkdir(parents=True, exist_ok=True)
    store = Cache(cache).wheels
    store.mkdir(parents=True, exist_ok=True)
    if not requirements:
        return dest
    progress("", f"fetch {', '.join(Path(r).name for r in requirements)}")
    check_store(store)
    ca = host_ca_bundle()
    ca_mounts = (Mount(ca, CA_PATH),) if ca else ()
    links = [d for d in links if d.is_dir()]
    link_args = [a for i in range(len(links)) for a in ("--find-links", f"{LINKS_DIR}/{i}")]
    script = steps.fetch_wheels_script(
        requirements, DOWNLOAD_DIR, [*link_args, "--find-links", STORE_DIR, *extra]
    )
    provider = get_provider(target.provider) if target else None
    res = engine.run(
        RunSpec(
            image=image,
            command=provider.step_command(target, script) if provider else ["sh", "-c", script],
            mounts=(
                *(provider.binds(target) if provider else ()),
                Mount(dest, DOWNLOAD_DIR, read_only=False),
                Mount(store, STORE_DIR),
                *(Mount(m, IN_DIR) for m in mounts),
                *(Mount(d, f"{LINKS_DIR}/{i}") for i, d in enumerate(links)),
                *ca_mounts,
            ),
            env={
                **(provider.environment(target) if provider else {}),
                **({"PIP_CERT": CA_PATH} if ca else {}),
            },
            network=True,
        ),
        log,
    )
    if not res.ok and provider and (err := provider.failure(target, res.output)):
        raise ConfigError(f"fetch: {err.message}; log: {log}", fix=err.fix)
    if not res.ok:
        raise BuildError(
            f"could not fetch {', '.join(requirements)} as wheels for the "
            f"target's Python:\n{tail(res.output)}\n  log: {log}",
            fix="check the names and versions; a dependency that has no wheel "
            "must be built first (add it to the wheelhouse)",
        )
    check_store_copies(dest, store)
    for p in dest.glob("*.whl"):
        # Only the index's wheels are shared by runs: the wheel under test and a
        # wheelhouse's stay out, or another wheelhouse's runs would find them there.
        given = (*mounts, *links)
        if not (store / p.name).exists() and not any((d / p.name).exists() for d in given):
            store_wheel(p, store)
    return dest


# --- the wheel store: each file with the sha256 it entered with ---------------------------------
def _recorded(store: Path, name: str) -> Path:
    return store / f"{name}.sha256"


def _record(kept: Path, sha: str) -> None:
    # The sha256, and the size and mtime it was checked at: an unchanged stat skips the hashing.
    st = kept.stat()
    write_atomic(_recorded(kept.parent, kept.name), f"{sha} {st.st_size} {st.st_mtime_ns}\n")


def store_wheel(path: Path, store: Path) -> None:
    """Share a fetched wheel with later runs, with its sha256 beside it: pip checked the file
    against the index's hash when it downloaded it, so the store keeps what the index served."""
    copy_atomic(path, store / path.name)
    _record(store / path.name, pypi.sha256_of(path))


def check_store(store: Path) -> None:
    """Refuse a run whose wheel store holds a file that is not the one recorded when it was
    stored (pip may take any of them through --find-links): before every fetch. A file whose
    size and mtime are the recorded ones is not hashed again."""
    changed = []
    for record in sorted(store.glob("*.whl.sha256")):
        kept = record.with_suffix("")
        if not kept.is_file():
            continue
        sha, *stat = record.read_text().split()
        st = kept.stat()
        if stat == [str(st.st_size), str(st.st_mtime_ns)]:
            continue
        have = pypi.sha256_of(kept)
        if have != sha:
            changed.append(f"{kept.name}: sha256 {have}, stored as {sha}")
        else:
            _record(kept, sha)  # touched, or an older record without the stat
    _refuse_changed(changed, store)


def check_store_copies(folder: Path, store: Path) -> None:
    """Refuse when a wheel in `folder` that pip took from the store is not the file the store
    recorded (changed or replaced since): every run, not only a rebuild. A store file without
    a record (an older cbuild's) gets one now, from its present bytes."""
    changed = []
    for p in sorted(folder.glob("*.whl")):
        kept, record = store / p.name, _recorded(store, p.name)
        if not kept.is_file():
            continue
        have = pypi.sha256_of(p)
        if not record.is_file():
            if pypi.sha256_of(kept) == have:
                _record(kept, have)
            continue
        want = record.read_text().split()[0]
        if have != want:
            changed.append(f"{p.name}: sha256 {have}, stored as {want}")
    _refuse_changed(changed, store)


def _refuse_changed(changed: list[str], store: Path) -> None:
    if changed:
        raise FetchError(
            "the wheel store holds files that changed since they were stored:\n    "
            + "\n    ".join(changed),
            fix=f"delete them from {store} (and their .sha256 files): the next run fetches "
            "them again from the index",
        )


def fetch_pinned(
    engine: Engine,
    progress: TargetProgressFn,
    image: str,
    entries: list[pypi.LockEntry],
    dest: Path,
    cache: Path,
    logs: Path,
    target: Target | None = None,
) -> Path:
    """Exactly the locked build inputs: from the wheel store when a file with the locked
    sha256 is there, else through pip's hash-checking mode (`name==version --hash=sha256:...`,
    --require-hashes, no dependency resolution: the lock lists them all); every file is then
    checked against its sha256 again, whichever way it came."""
    dest.mkdir(parents=True, exist_ok=True)
    store = Cache(cache).wheels
    missing = []
    for e in entries:
        have = store / e.filename
        if have.is_file() and pypi.sha256_of(have) == e.sha256:
            shutil.copyfile(have, dest / e.filename)
        else:
            missing.append(e)
    if missing:
        hashed = logs / "locked-requirements"
        hashed.mkdir(parents=True, exist_ok=True)
        (hashed / "requirements.txt").write_text(steps.hashed_requirements(missing))
        try:
            fetch_wheels(
                engine,
                progress,
                image,
                ["-r", f"{IN_DIR}/requirements.txt"],
                dest,
                cache,
                logs / "fetch.log",
                mounts=[hashed],
                extra=("--no-deps", "--require-hashes"),
                target=target,
            )
        except BuildError as exc:
            # pip's hash-checking mode refused what the index serves: the lock's word, not a
            # build's failure (exit 3, like a mismatch found below).
            if not (mismatch := _hash_mismatches(exc.message)):
                raise
            raise FetchError(
                "the build inputs differ from the locked ones:\n    "
                + "\n    ".join(
                    f"{e.filename}: sha256 {mismatch[e.sha256]}, the lock says {e.sha256}"
                    for e in missing
                    if e.sha256 in mismatch
                ),
                fix="the index now serves other files for these pins; put the locked files "
                f"(by sha256) in the wheel store {store} to rebuild exactly",
            ) from exc
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


def _hash_mismatches(output: str) -> dict[str, str]:
    """pip's --require-hashes refusals: the expected sha256 -> the one it got."""
    expected = re.findall(r"Expected sha256 ([0-9a-f]{64})", output)
    got = re.findall(r"Got\s+([0-9a-f]{64})", output)
    return dict(zip(expected, got, strict=False))


def tail(text: str, n: int = 20) -> str:
    """The last `n` lines of a step's output, indented for an error message."""
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-n:])
