"""Host-side fetching from PyPI: release facts, verified downloads, sdist facts, lock files.

This is the only networked step of the pipeline; everything it fetches is recorded by sha256 so
the offline build and test steps can be checked against it.
"""

from __future__ import annotations

import bisect
import calendar
import difflib
import hashlib
import http.client
import json
import os
import posixpath
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from packaging.utils import (
    InvalidSdistFilename,
    InvalidVersion,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from builder.errors import BuildError, ConfigError, FetchError

DEFAULT_PYPI_URL = "https://pypi.org"
TRIES = 4
BACKOFF_S = 0.5  # first wait; doubles per try, capped at 8 s
TIMEOUT_S = 60.0
USER_AGENT = "cbuild/0.1 (+urllib)"

# PEP 517/518: an sdist without [build-system] is built as if it had these.
LEGACY_REQUIRES = ("setuptools>=40.8.0", "wheel")
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"

SDIST_SUFFIXES = (".tar.gz", ".zip")
LockKind = Literal["sdist", "build", "runtime"]


def pypi_url() -> str:
    return os.environ.get("CBUILD_PYPI_URL", DEFAULT_PYPI_URL).rstrip("/")


# --- HTTP with retries ------------------------------------------------------------------------


# IncompleteRead and friends are HTTPException: a connection cut mid-answer.
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)


def _is_transient(exc: BaseException) -> bool:
    """Worth another try: the network or the server hiccuped. A 404 (or any other 4xx but 429)
    is an answer, and asking again gives the same answer."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return isinstance(exc, _NETWORK_ERRORS)


def _retrying() -> Retrying:
    return Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(TRIES),
        wait=wait_exponential(multiplier=BACKOFF_S, max=8),
        reraise=True,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _open(url: str) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _get_json(url: str) -> dict[str, Any] | None:
    """The decoded JSON at `url`, or None for a 404; transient failures are retried."""
    try:
        for attempt in _retrying():
            with attempt, _open(url) as resp:
                return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if not _is_transient(exc):
            raise FetchError(f"PyPI refused {url}: {_reason(exc)}") from exc
        raise _unreachable(url, exc) from exc
    except _NETWORK_ERRORS as exc:
        raise _unreachable(url, exc) from exc
    except json.JSONDecodeError as exc:
        raise FetchError(f"PyPI sent invalid JSON for {url}: {exc}") from exc
    raise AssertionError("unreachable")  # Retrying either returns or raises


def _unreachable(url: str, exc: BaseException) -> FetchError:
    return FetchError(
        f"could not reach PyPI at {url} after {TRIES} tries: {_reason(exc)}",
        fix="check the network (or CBUILD_PYPI_URL) and try again",
    )


# --- release facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    name: str  # the project's name as PyPI spells it, e.g. "biopython", "PyYAML"
    version: str  # the version string exactly as PyPI lists it
    sdist_url: str
    sdist_filename: str
    sdist_sha256: str
    requires_python: str | None
    upload_time: datetime  # timezone-aware (UTC)


def release_info(name: str, version: str) -> Release:
    """The sdist of `name` `version` on PyPI, or a FetchError saying what is there instead.

    The version endpoint is tried first (small); on a 404 the project endpoint tells an unknown
    package from an unknown version and lists the versions that do exist. Some mirrors and
    proxies serve only the project endpoint, and this path works with those too."""
    base = pypi_url()
    quoted = urllib.parse.quote(name, safe="")
    version_url = f"{base}/pypi/{quoted}/{urllib.parse.quote(version, safe='')}/json"
    data = _get_json(version_url)
    if data is not None:
        files = data.get("urls", [])
        return _release(data["info"]["name"], str(data["info"]["version"]), files, version_url)

    project = _get_json(f"{base}/pypi/{quoted}/json")
    if project is None:
        raise FetchError(
            f"no package named {name!r} on PyPI",
            fix=f"check the spelling; search for the project at {base}/search/?q={quoted}",
        )
    real_name = project["info"]["name"]
    releases: dict[str, list[dict[str, Any]]] = project.get("releases", {})
    key = _match_version(version, releases)
    if key is None:
        latest = project["info"]["version"]
        raise FetchError(
            f"no version {version} of {real_name} on PyPI; latest is {latest}",
            fix=f"nearest versions: {', '.join(_nearest(version, list(releases)))}",
        )
    return _release(real_name, key, releases[key], f"{base}/pypi/{quoted}/json")


def _match_version(version: str, releases: dict[str, Any]) -> str | None:
    """The key of `releases` equal to `version` under PEP 440 ("1.85.0" is "1.85")."""
    if version in releases:
        return version
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    for key in releases:
        try:
            if Version(key) == wanted:
                return key
        except InvalidVersion:
            continue
    return None


def _nearest(version: str, keys: list[str], count: int = 5) -> list[str]:
    """The versions that sort next to `version`; "1.8" (a typo of "1.80"?) lists 1.8x first."""
    prefixed = [k for k in keys if k.startswith(version) and k != version]
    if prefixed:
        return _sorted_versions(prefixed)[-count:]
    parsed = []
    for key in keys:
        try:
            parsed.append((Version(key), key))
        except InvalidVersion:
            continue
    parsed.sort()
    try:
        at = bisect.bisect_left(parsed, (Version(version), ""))
    except InvalidVersion:
        return difflib.get_close_matches(version, keys, n=count, cutoff=0.0)
    lo = max(0, min(at - count // 2, len(parsed) - count))
    return [key for _, key in parsed[lo : lo + count]]


def _sorted_versions(keys: list[str]) -> list[str]:
    def key(k: str) -> tuple[int, Version | str]:
        try:
            return (1, Version(k))
        except InvalidVersion:
            return (0, k)

    return sorted(keys, key=key)


def _release(name: str, version: str, files: list[dict[str, Any]], page: str) -> Release:
    if not files:
        raise FetchError(
            f"version {version} of {name} has no files on PyPI",
            fix="pick another version",
        )
    sdists = [f for f in files if f.get("packagetype") == "sdist"]
    if not sdists:
        shown = [f["filename"] for f in files[:4]]
        more = f" and {len(files) - 4} more" if len(files) > 4 else ""
        raise FetchError(
            f"{name} {version} has no sdist on PyPI, only {', '.join(shown)}{more}",
            fix=f"to repackage a binary wheel instead of building from source, set "
            f"`[source] binary_wheel = true` in recipes/{canonicalize_name(name)}.toml",
        )
    # Old releases can carry both a .tar.gz and a .zip; .tar.gz is what modern tools make.
    sdists.sort(key=lambda f: (not f["filename"].endswith(".tar.gz"), f["filename"]))
    f = sdists[0]
    uploaded = f.get("upload_time_iso_8601") or f["upload_time"] + "Z"
    return Release(
        name=name,
        version=version,
        # Mirrors may answer with URLs relative to the JSON page.
        sdist_url=urllib.parse.urljoin(page, f["url"]),
        sdist_filename=f["filename"],
        sdist_sha256=f["digests"]["sha256"],
        requires_python=f.get("requires_python") or None,
        upload_time=datetime.fromisoformat(uploaded.replace("Z", "+00:00")),
    )


# --- downloads --------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, sha256: str, dest_dir: Path) -> Path:
    """`dest_dir/<filename of url>`, verified against `sha256`.

    A file already there with the right hash is returned without touching the network, so a
    dest_dir doubles as a content-addressed cache. A new file is written under a temporary name
    and renamed only once its hash matches: a reader never sees a partial or wrong file."""
    filename = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not filename or filename in (".", ".."):
        raise FetchError(f"cannot tell a file name from the URL {url}")
    sha256 = sha256.lower()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    if target.is_file() and sha256_of(target) == sha256:
        return target

    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        got = _download_to(url, tmp)
        if got != sha256:
            raise FetchError(
                f"sha256 mismatch for {filename}: expected {sha256}, got {got}",
                fix="the file on the index changed or the download was tampered with; "
                "check the expected hash (lock file) before trusting either",
            )
        # mkstemp made it 0600: a container user other than ours (Apptainer's, say) must read
        # the cached file like any other downloaded file.
        tmp.chmod(0o644)
        tmp.replace(target)  # atomic within one file system
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download_to(url: str, tmp: Path) -> str:
    """Stream `url` into `tmp` (from scratch on every try) and return its sha256."""
    try:
        for attempt in _retrying():
            with attempt:
                h = hashlib.sha256()
                with _open(url) as resp, tmp.open("wb") as out:
                    for chunk in iter(lambda r=resp: r.read(1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
                return h.hexdigest()
    except urllib.error.HTTPError as exc:
        if not _is_transient(exc):
            raise FetchError(f"could not download {url}: {_reason(exc)}") from exc
        raise _download_failed(url, exc) from exc
    except _NETWORK_ERRORS as exc:
        raise _download_failed(url, exc) from exc
    raise AssertionError("unreachable")


def _download_failed(url: str, exc: BaseException) -> FetchError:
    return FetchError(
        f"could not download {url} after {TRIES} tries: {_reason(exc)}",
        fix="check the network and try again",
    )


# --- sdist facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SdistFacts:
    top_folder: str  # the sdist's single top folder, e.g. "biopython-1.85"
    build_requires: tuple[str, ...]
    build_backend: str
    has_pyproject: bool
    source_date_epoch: int  # newest member mtime: the same sdist always gives the same value


@dataclass(frozen=True)
class _Member:
    name: str
    mtime: float
    is_dir: bool


def _is_zip(sdist: Path) -> bool:
    return sdist.name.endswith(".zip")


def _members(sdist: Path) -> Iterator[_Member]:
    if _is_zip(sdist):
        with zipfile.ZipFile(sdist) as zf:
            for info in zf.infolist():
                # Zip times carry no zone; reading them as UTC keeps the result host-independent.
                yield _Member(
                    info.filename, calendar.timegm((*info.date_time, 0, 0, 0)), info.is_dir()
                )
    else:
        with tarfile.open(sdist, "r:*") as tf:
            for m in tf:
                yield _Member(m.name, m.mtime, m.isdir())


def _read_member(sdist: Path, name: str) -> bytes | None:
    try:
        if _is_zip(sdist):
            with zipfile.ZipFile(sdist) as zf:
                return zf.read(name)
        with tarfile.open(sdist, "r:*") as tf:
            fh = tf.extractfile(name)
            return fh.read() if fh else None
    except KeyError:
        return None


def _top_folder(sdist: Path, names: list[str]) -> str:
    tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    if len(tops) != 1:
        raise FetchError(
            f"{sdist.name} is not a valid sdist: expected one top folder, found "
            f"{', '.join(sorted(tops)[:5]) or 'none'}",
        )
    return tops.pop()


def _open_error(sdist: Path, exc: Exception) -> FetchError:
    return FetchError(f"cannot read {sdist}: {exc}", fix="delete it and fetch it again")


def sdist_facts(sdist: Path) -> SdistFacts:
    """What building `sdist` needs, read from the archive without extracting it."""
    try:
        members = list(_members(sdist))
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _open_error(sdist, exc) from exc
    top = _top_folder(sdist, [m.name for m in members])
    epoch = int(max((m.mtime for m in members), default=0))

    raw = _read_member(sdist, f"{top}/pyproject.toml")
    if raw is None:
        return SdistFacts(top, LEGACY_REQUIRES, LEGACY_BACKEND, False, epoch)
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{sdist.name}: invalid {top}/pyproject.toml: {exc}") from exc
    system = data.get("build-system")
    if system is None:
        return SdistFacts(top, LEGACY_REQUIRES, LEGACY_BACKEND, True, epoch)
    requires = system.get("requires")
    # PEP 518: a [build-system] table without `requires` is an error, not a fallback.
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        raise BuildError(
            f"{sdist.name}: [build-system] requires in pyproject.toml is missing or not a list "
            "of strings",
            fix="report it upstream; add the build requirements in the recipe's [build] requires",
        )
    backend = system.get("build-backend") or LEGACY_BACKEND
    return SdistFacts(top, tuple(requires), str(backend), True, epoch)


def _check_inside(sdist: Path, member: str, dest: Path, link: str | None = None) -> None:
    """Refuse a member, or the target of a link member, that would land outside dest."""
    shown = f"{member} -> {link}" if link is not None else member
    path = link if link is not None else member
    if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
        raise FetchError(
            f"refusing to extract {sdist.name}: member {shown!r} points outside the folder",
            fix="the archive is malformed or malicious; do not build it",
        )
    resolved = (dest / path).resolve()
    if not resolved.is_relative_to(dest.resolve()):
        raise FetchError(
            f"refusing to extract {sdist.name}: member {shown!r} points outside the folder",
            fix="the archive is malformed or malicious; do not build it",
        )


def safe_extract(sdist: Path, dest: Path) -> Path:
    """Extract `sdist` under `dest` and return its top folder; refuse members escaping dest."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if _is_zip(sdist):
            with zipfile.ZipFile(sdist) as zf:
                names = zf.namelist()
                top = _top_folder(sdist, names)
                for n in names:
                    _check_inside(sdist, n, dest)
                _refuse_existing(dest / top)
                zf.extractall(dest)
        else:
            with tarfile.open(sdist, "r:*") as tf:
                members = tf.getmembers()
                top = _top_folder(sdist, [m.name for m in members])
                for m in members:
                    _check_inside(sdist, m.name, dest)
                    if m.issym():
                        # A symlink's target is relative to the folder holding the link.
                        target = posixpath.join(posixpath.dirname(m.name), m.linkname)
                        _check_inside(sdist, m.name, dest, posixpath.normpath(target))
                    elif m.islnk():
                        _check_inside(sdist, m.name, dest, m.linkname)
                    elif not (m.isfile() or m.isdir()):
                        raise FetchError(
                            f"refusing to extract {sdist.name}: member {m.name!r} is a device "
                            "or fifo, which no sdist needs",
                        )
                _refuse_existing(dest / top)
                # The "data" filter re-checks all of the above and drops setuid bits.
                tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise _open_error(sdist, exc) from exc
    return dest / top


def _refuse_existing(folder: Path) -> None:
    # Files left from an earlier extraction would leak into the build.
    if folder.exists():
        raise FetchError(
            f"{folder} already exists", fix="extract into an empty folder or remove it first"
        )


# --- lock files -------------------------------------------------------------------------------

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockEntry:
    name: str  # canonical (PEP 503) name
    version: str
    filename: str
    sha256: str
    kind: LockKind
    url: str | None = None


@dataclass(frozen=True)
class Lock:
    entries: tuple[LockEntry, ...] = ()

    def of_kind(self, kind: LockKind) -> list[LockEntry]:
        return [e for e in self.entries if e.kind == kind]

    def to_json(self) -> str:
        # Sorted and key-ordered so that the same inputs give byte-identical lock files.
        entries = sorted(self.entries, key=lambda e: (e.kind, e.name, e.filename))
        doc = {"lock_format": LOCK_FORMAT, "entries": [asdict(e) for e in entries]}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Lock:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"lock file is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("lock_format") != LOCK_FORMAT:
            raise ConfigError(
                f"lock file has format {doc.get('lock_format') if isinstance(doc, dict) else None}"
                f", expected {LOCK_FORMAT}",
                fix="regenerate it with this version of cbuild",
            )
        entries = [_lock_entry(i, raw) for i, raw in enumerate(doc.get("entries", []))]
        return cls(tuple(entries))


def _lock_entry(i: int, raw: Any) -> LockEntry:
    required = {"name", "version", "filename", "sha256", "kind"}
    known = required | {"url"}
    if not isinstance(raw, dict) or not required <= set(raw) or set(raw) - known:
        raise ConfigError(
            f"lock file entry {i} is malformed: {raw!r}",
            fix=f"each entry has the keys {', '.join(sorted(known))}",
        )
    if raw["kind"] not in get_args(LockKind):
        raise ConfigError(
            f"lock file entry {i} has kind {raw['kind']!r}",
            fix=f"use one of {', '.join(get_args(LockKind))}",
        )
    return LockEntry(**raw)


def lock_entries_from_dir(folder: Path, kind: LockKind) -> list[LockEntry]:
    """One entry per wheel or sdist in `folder` (not recursive), sorted by file name."""
    out = []
    for path in sorted(folder.iterdir()):
        fname = path.name
        if fname.startswith(".") or not path.is_file():
            continue  # partial downloads are hidden files
        try:
            if fname.endswith(".whl"):
                name, version, _, _ = parse_wheel_filename(fname)
            elif fname.endswith(SDIST_SUFFIXES):
                name, version = parse_sdist_filename(fname)
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as exc:
            raise FetchError(f"cannot lock {path}: {exc}") from exc
        out.append(LockEntry(name, str(version), fname, sha256_of(path), kind))
    return out
