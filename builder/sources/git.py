"""Git sources: a repository URL and a tag or commit, resolved to a commit at fetch time and
made into a deterministic source archive (the commit's tracked files, submodules included as
pip includes them, every mtime the commit's time), so that it is locked by commit and sha256
and built offline like an sdist. Runs the host's `git`, network on."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ConfigError, FetchError
from builder.files import temp_beside

GIT_PREFIX = "git+"  # lock URLs: git+<repository>@<commit>, as pip writes them
_WITH_SUBMODULES = "#submodules"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TIMEOUT_S = 600


@dataclass(frozen=True)
class GitArchive:
    path: Path
    repo: str
    commit: str
    commit_time: int  # committer time, seconds since the epoch: every member's mtime
    submodules: bool = False

    @property
    def url(self) -> str:
        """What the lock records: enough to make the same archive again."""
        return lock_url(self.repo, self.commit, self.submodules)


def lock_url(repo: str, commit: str, submodules: bool = False) -> str:
    """`git+REPO@COMMIT` (pip's spelling), `#submodules` when they are in the archive."""
    return f"{GIT_PREFIX}{repo}@{commit}{_WITH_SUBMODULES if submodules else ''}"


def parse_lock_url(url: str) -> tuple[str, str, bool] | None:
    """(repository, commit, submodules) of a lock URL; None for any other URL."""
    if not url.startswith(GIT_PREFIX):
        return None
    body = url[len(GIT_PREFIX) :]
    submodules = body.endswith(_WITH_SUBMODULES)
    repo, _, commit = body.removesuffix(_WITH_SUBMODULES).rpartition("@")
    return (repo, commit, submodules) if repo and _COMMIT.fullmatch(commit) else None


def _git(*args: str, cwd: Path | None = None, file_ok: bool = False) -> str:
    """Run git without the user's configuration or a terminal prompt; its output."""
    git = shutil.which("git")
    if git is None:
        raise ConfigError(
            "[source] git needs git on the host, and there is none on PATH",
            fix="install git (apt-get install git), or build from an archive ([source] url)",
        )
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    # Submodules by file:// are refused by git since 2.38.1 (CVE-2022-39253); allowed only
    # when the repository itself is a local one.
    opts = ["-c", "protocol.file.allow=always"] if file_ok else []
    opts += ["-c", "core.autocrlf=false", "-c", "advice.detachedHead=false"]
    try:
        res = subprocess.run(
            [git, *opts, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"git {args[0]} took over {_TIMEOUT_S} s") from exc
    if res.returncode != 0:
        raise FetchError(
            f"git {' '.join(args)} failed (exit {res.returncode}): "
            f"{(res.stderr or res.stdout).strip()[-800:]}",
            fix="check the repository URL, that the tag or commit exists, and the network",
        )
    return res.stdout


def resolve(repo: str, rev: str) -> str:
    """The commit `rev` names in `repo`: a tag (annotated tags peeled), a branch, or a full
    commit id (taken as given; the clone proves it exists)."""
    if _COMMIT.fullmatch(rev.lower()):
        return rev.lower()
    out = _git("ls-remote", repo, rev, f"refs/tags/{rev}", f"refs/tags/{rev}^{{}}")
    refs = dict(reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
    for ref in (f"refs/tags/{rev}^{{}}", f"refs/tags/{rev}", f"refs/heads/{rev}", rev):
        if ref in refs:
            return refs[ref]
    raise FetchError(
        f"{repo} has no tag, branch or commit {rev!r}",
        fix="set [source] rev to an existing tag (e.g. 'v{version}') or a full 40-digit commit",
    )


def archive_name(top: str, commit: str) -> str:
    """The archive's file name: its commit in it, so a PyPI sdist of the same name and version
    and the archive of another commit never share a cache entry."""
    return f"{top}-git{commit[:12]}.tar.gz"


def fetch_archive(
    repo: str, rev: str, dest_dir: Path, top: str, submodules: bool = False
) -> GitArchive:
    """`dest_dir/archive_name(top, commit)`: the tracked files of `rev`'s commit under the
    folder `top`. Same commit, same bytes: names sorted, owner root, modes 0644/0755, mtimes
    the commit's, gzip without name or time."""
    commit = resolve(repo, rev)
    local = repo.startswith("file://") or "://" not in repo and ":" not in repo
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cbuild-git-") as tmp:
        work = Path(tmp) / "src"
        _git("init", "-q", str(work))
        _git("remote", "add", "origin", repo, cwd=work)
        try:  # one commit, shallow (GitHub and git >= 2.5 servers allow it by id)
            _git("fetch", "-q", "--depth", "1", "origin", commit, cwd=work, file_ok=local)
        except FetchError:
            _git("fetch", "-q", "--tags", "origin", cwd=work, file_ok=local)
        _git("checkout", "-q", "--detach", commit, cwd=work)
        if submodules:  # as pip does for git+ URLs
            _git("submodule", "update", "--init", "--recursive", "-q", cwd=work, file_ok=local)
        when = int(_git("show", "-s", "--format=%ct", commit, cwd=work).strip())
        names = _git("ls-files", "-z", "--recurse-submodules", cwd=work).split("\0")
        out = dest_dir / archive_name(top, commit)
        _write_tar(work, sorted(n for n in names if n), top, when, out)
    return GitArchive(out, repo, commit, when, submodules)


def _write_tar(root: Path, names: list[str], top: str, mtime: int, out: Path) -> None:
    tmp = temp_beside(out)
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            for name in names:
                path = root / name
                st = path.lstat()
                info = tarfile.TarInfo(f"{top}/{name}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
                if path.is_symlink():
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                    tar.addfile(info)
                    continue
                if not path.is_file():  # a submodule left out (submodules = false)
                    continue
                info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
