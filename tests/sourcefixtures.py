"""Sources for the source tests, all on this machine: a bare git repository served by file://
(made by the test with the host's git; these hosts reach no git forge), and a local HTTP
server on 127.0.0.1 that serves a folder and stops itself (at the end of the test, or after
`limit_s` at the latest)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z",
    "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/bin:/bin",
}
COMMIT_TIME = 1704164645  # GIT_COMMITTER_DATE


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        env=GIT_ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def bare_repo(root: Path, name: str, files: dict[str, str], tag: str | None = None) -> Path:
    """A bare repository `root/<name>.git` with one commit of `files` (and `tag`, annotated)."""
    work = root / f"{name}-work"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", ".")
    git(work, "commit", "-qm", "first")
    if tag:
        git(work, "tag", "-a", tag, "-m", tag)
    bare = root / f"{name}.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return bare


def commit_more(bare: Path, files: dict[str, str], tag: str | None = None) -> str:
    """Another commit on main of `bare` (and a tag); its id."""
    work = bare.parent / f"{bare.stem}-more"
    if not work.exists():
        git(bare.parent, "clone", "-q", str(bare), str(work))
    git(work, "pull", "-q")
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", ".")
    git(work, "commit", "-qm", "more")
    if tag:
        git(work, "tag", "-a", tag, "-m", tag)
    git(work, "push", "-q", "--tags", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def pure_package(name: str, version: str) -> dict[str, str]:
    """A tiny pure-Python project (setuptools, pyproject) as files."""
    return {
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ),
        f"{name}/__init__.py": f'VERSION = "{version}"\n',
    }


def tar_gz(dest: Path, top: str, files: dict[str, str]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(data), COMMIT_TIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


@contextlib.contextmanager
def http_server(folder: Path, limit_s: float = 300) -> Iterator[str]:
    """http://127.0.0.1:PORT serving `folder`, for the `with` block (or `limit_s` at most)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(limit_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(10)
