"""CPython built from its release tarball in an image layer of its own (the standalone
provider's Pythons that the distribution lacks), and the pinned tarball it is built from.

The tarball is one file pinned by sha256 that several mirrors serve byte for byte (python.org,
Debian's source archive). The host gets it, not the image build: the host's trust store and
proxy settings are the ones that work (a TLS-inspecting proxy breaks fetches inside a build),
one checked copy in the cache serves every engine and every later build offline, and a site
without any mirror drops the file into `$CBUILD_SOURCES`. The layer copies it in (the engines'
build context) and builds once per stack: it depends on the base and the packages, never on a
level, so every level's image reuses it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from builder.cache import Cache, default_cache
from builder.errors import ConfigError
from builder.files import temp_beside
from builder.images.paths import DEFAULT_PATH, INPUTS_DIR
from builder.images.spec import ImageSpec, Layer, SourceFile

SOURCES_ENV = "CBUILD_SOURCES"  # a folder of source tarballs a site provides by hand
PROBE_TIMEOUT = 5.0  # seconds a mirror has to answer the buildability probe


@dataclass(frozen=True)
class CPython:
    """A CPython release built from source under its own prefix."""

    version: str  # "3.13": the target's Python
    release: str  # "3.13.5"
    prefix: str  # "/opt/python/3.13"
    tarball: SourceFile
    build_packages: tuple[str, ...]  # apt packages its build needs beyond build-essential

    @property
    def bin_dir(self) -> str:
        return f"{self.prefix}/bin"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sources_dirs(cache_root: Path | None = None) -> list[Path]:
    """Where a tarball is looked for, in order: $CBUILD_SOURCES, then the cache."""
    out = [Path(os.environ[SOURCES_ENV])] if os.environ.get(SOURCES_ENV) else []
    return [*out, Cache(cache_root or default_cache()).sources]


def locate(src: SourceFile, cache_root: Path | None = None) -> Path | None:
    """The file, checked by sha256, where a site or an earlier fetch put it; else None."""
    for folder in sources_dirs(cache_root):
        path = folder / src.file
        if path.is_file() and _sha256(path) == src.sha256:
            return path
    return None


def _answer(url: str, timeout: float, method: str = "HEAD") -> str | None:
    """None when `url` answers 200; else why not, in a few words."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return str(exc.reason)[:80]
    except OSError as exc:
        return str(exc)[:80]


@cache
def _probe(src: SourceFile) -> tuple[str | None, str]:
    """(the first mirror that answers, or None; what each mirror said)."""
    said = []
    for url in src.mirrors:
        why = _answer(url, PROBE_TIMEOUT)
        if why is None:
            return url, ""
        said.append(f"{url.split('/')[2]}: {why}")
    return None, "; ".join(said)


def unavailable(src: SourceFile, cache_root: Path | None = None) -> str | None:
    """Why the file cannot be had here (None when it is here or a mirror serves it)."""
    if locate(src, cache_root):
        return None
    url, said = _probe(src)
    if url:
        return None
    env = os.environ.get(SOURCES_ENV)
    where = f"{SOURCES_ENV}={env} does not hold it" if env else f"{SOURCES_ENV} is unset"
    return f"no mirror of {src.file} answers ({said}) and {where}"


def sources_fix(src: SourceFile) -> str:
    return (
        f"put {src.file} (sha256 {src.sha256}) in a folder and name it in ${SOURCES_ENV}, "
        f"or build where one of {', '.join(src.mirrors)} answers"
    )


def ensure(src: SourceFile, cache_root: Path | None = None) -> Path:
    """The checked file: found, or downloaded into the cache from the first mirror that
    serves the pinned bytes."""
    if found := locate(src, cache_root):
        return found
    dest = Cache(cache_root or default_cache()).sources / src.file
    dest.parent.mkdir(parents=True, exist_ok=True)
    tried = []
    for url in src.mirrors:
        tmp = temp_beside(dest)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
            got = _sha256(tmp)
            if got != src.sha256:
                tried.append(f"{url}: sha256 {got}, not the pinned one")
                continue
            tmp.replace(dest)
            return dest
        except (urllib.error.URLError, OSError) as exc:
            tried.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise ConfigError(f"could not get {src.file}: " + "; ".join(tried), fix=sources_fix(src))


def layer_script(py: CPython) -> tuple[str, ...]:
    """The layer's shell lines (one RUN): its build packages, then configure, make, install
    from the copied tarball, checked again by sha256; the test suite and the sources go."""
    tar = f"{INPUTS_DIR}/{py.tarball.file}"
    work = f"/tmp/cbuild-python-{py.version}"
    check = "import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid, venv, ensurepip"
    return (
        "set -e",
        "apt-get update",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        + " ".join(py.build_packages),
        "rm -rf /var/lib/apt/lists/*",
        f"echo {shlex.quote(f'{py.tarball.sha256}  {tar}')} | sha256sum -c -",
        f"mkdir -p {work}",
        f"tar -xf {tar} -C {work} --strip-components=1 --no-same-owner",
        f"cd {work}",
        f"./configure --prefix={py.prefix} --with-ensurepip=install > /tmp/configure.log"
        " || { tail -n 40 config.log; exit 1; }",
        'make -j"$(nproc)" > /tmp/make.log 2>&1 || { tail -n 60 /tmp/make.log; exit 1; }',
        "make install > /tmp/install.log 2>&1 || { tail -n 60 /tmp/install.log; exit 1; }",
        "cd /",
        f"rm -rf {work} {tar} /tmp/configure.log /tmp/make.log /tmp/install.log",
        f"rm -rf {py.prefix}/lib/python{py.version}/test",
        f"{py.bin_dir}/python{py.version} -c {shlex.quote(check)}",
        f"{py.bin_dir}/python{py.version} -m pip --version",
    )


def with_cpython(spec: ImageSpec, py: CPython, packages: tuple[str, ...]) -> ImageSpec:
    """`spec` with `py` as its `python3`: the layer after the provider's `packages` (so every
    level shares it), a recipe's further packages as a step after it (so they do not rebuild
    it), and the prefix first on PATH."""
    extra = tuple(p for p in spec.packages if p not in packages)
    install = (
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
        f" --no-install-recommends {' '.join(extra)} && rm -rf /var/lib/apt/lists/*"
    )
    env = dict(spec.env) | {"PATH": f"{py.bin_dir}:{DEFAULT_PATH}"}
    return replace(
        spec,
        packages=packages,
        layers=(Layer(f"python{py.version}", layer_script(py), (py.tarball,)),),
        steps=((install,) if extra else ()) + spec.steps,
        env=tuple(sorted(env.items())),
    )
