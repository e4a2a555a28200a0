"""URL sources: any source archive (.tar.gz, .tgz, .tar.bz2, .tar.xz, .zip) at an http(s) or
file URL, verified against the recipe's sha256 and kept under a name of its package, so two
projects' `v1.0.tar.gz` (GitHub tag archives) never share a cache entry."""

from __future__ import annotations

import posixpath
import tempfile
import urllib.parse
from pathlib import Path

from builder.errors import ConfigError, FetchError
from builder.files import copy_atomic
from builder.sources import pypi

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


def suffix_of(name: str) -> str | None:
    return next((s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), None)


def archive_name(
    url: str, sha256: str, package: str, version: str, filename: str | None = None
) -> str:
    """The cached name: the recipe's `filename`, else `<package>-<version>-<sha256[:12]>` and
    the URL's suffix (never PyPI's sdist name: a cache entry names one content)."""
    if filename:
        if suffix_of(filename) is None:
            raise ConfigError(
                f"[source] filename {filename!r} is not an archive name",
                fix=f"end it with one of {', '.join(ARCHIVE_SUFFIXES)}",
            )
        return filename
    base = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    suffix = suffix_of(base)
    if suffix is None:
        raise ConfigError(
            f"[source] url {url}: cannot tell the archive type from its name {base!r}",
            fix=f"set [source] filename to a name ending in one of {', '.join(ARCHIVE_SUFFIXES)}",
        )
    return f"{package}-{version}-{sha256[:12]}{suffix}"


def fetch_archive(url: str, sha256: str, dest_dir: Path, name: str) -> Path:
    """`dest_dir/name`, the file at `url` with exactly `sha256`: a file already there with it
    is taken without the network; a new one is checked before it gets its name."""
    dest = dest_dir / name
    if dest.is_file() and pypi.sha256_of(dest) == sha256:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cbuild-url-", dir=dest_dir) as tmp:
        try:
            got = pypi.download(url, sha256, Path(tmp))
        except FetchError as exc:
            if "sha256 mismatch" in exc.message:
                raise FetchError(
                    f"[source] url {url}: {exc.message}",
                    fix="if the new file is the one you mean to build, put its sha256 "
                    "(sha256sum FILE) in the recipe's [source] sha256",
                ) from exc
            raise
        copy_atomic(got, dest)
    dest.chmod(0o644)
    return dest
