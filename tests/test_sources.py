"""[source] git and [source] url: resolution to a commit, deterministic archives, submodules,
sha256-checked downloads, the fetch step's choice of source and the rebuild from a lock.
Against a local bare git repository (file://) and a local HTTP server on 127.0.0.1: these
hosts reach no git forge."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from builder.errors import ConfigError, FetchError
from builder.pipeline import fetch
from builder.pipeline.model import WheelRequest
from builder.recipes import Recipe, Source
from builder.sources import git, pypi, url
from tests.sourcefixtures import (
    COMMIT_TIME,
    bare_repo,
    commit_more,
    http_server,
    pure_package,
    tar_gz,
)


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tf:
        return tf.getnames()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return bare_repo(tmp_path / "git", "gpkg", pure_package("gpkg", "1.0"), tag="v1.0")


def test_resolve_tag_branch_and_commit(repo: Path) -> None:
    uri = repo.as_uri()
    commit = git.resolve(uri, "v1.0")  # annotated: peeled to the commit, not the tag object
    assert len(commit) == 40
    assert git.resolve(uri, "main") == commit
    assert git.resolve(uri, commit.upper()) == commit
    newer = commit_more(repo, {"gpkg/extra.py": "X = 1\n"}, tag="v1.1")
    assert git.resolve(uri, "v1.1") == newer != commit
    assert git.resolve(uri, "v1.0") == commit  # a tag stays where it was


def test_unknown_rev_names_the_fix(repo: Path) -> None:
    with pytest.raises(FetchError, match="no tag, branch or commit 'v9'") as exc:
        git.resolve(repo.as_uri(), "v9")
    assert "rev" in exc.value.fix


def test_archive_is_deterministic_and_locked_by_commit(repo: Path, tmp_path: Path) -> None:
    a = git.fetch_archive(repo.as_uri(), "v1.0", tmp_path / "a", "gpkg-1.0")
    b = git.fetch_archive(repo.as_uri(), a.commit, tmp_path / "b", "gpkg-1.0")
    assert a.path.name == b.path.name == f"gpkg-1.0-git{a.commit[:12]}.tar.gz"
    assert pypi.sha256_of(a.path) == pypi.sha256_of(b.path)  # same commit, same bytes
    assert names(a.path) == ["gpkg-1.0/gpkg/__init__.py", "gpkg-1.0/pyproject.toml"]
    with tarfile.open(a.path) as tf:
        assert {(m.mtime, m.uid, m.mode) for m in tf} == {(COMMIT_TIME, 0, 0o644)}
    facts = pypi.sdist_facts(a.path)  # built like an sdist
    assert facts.top_folder == "gpkg-1.0" and facts.source_date_epoch == COMMIT_TIME
    assert git.parse_lock_url(a.url) == (repo.as_uri(), a.commit, False)
    assert git.parse_lock_url("https://example.org/x.tar.gz") is None


def test_submodules_as_pip_takes_them(tmp_path: Path) -> None:
    sub = bare_repo(tmp_path / "git", "sub", {"vendor.c": "int v(void){return 1;}\n"})
    main = bare_repo(tmp_path / "git", "main", pure_package("mpkg", "2.0"))
    from tests.sourcefixtures import git as run_git

    work = tmp_path / "git" / "main-work"
    run_git(work, "submodule", "add", "-q", sub.as_uri(), "third_party/sub")
    run_git(work, "commit", "-qm", "submodule")
    run_git(work, "push", "-q", str(main), "main")
    with_sub = git.fetch_archive(main.as_uri(), "main", tmp_path / "a", "mpkg-2.0", True)
    without = git.fetch_archive(main.as_uri(), "main", tmp_path / "b", "mpkg-2.0", False)
    assert "mpkg-2.0/third_party/sub/vendor.c" in names(with_sub.path)
    assert not any("third_party/sub" in n for n in names(without.path))
    assert with_sub.url.endswith("#submodules")
    assert git.parse_lock_url(with_sub.url) == (main.as_uri(), with_sub.commit, True)


def test_url_archive_checked_and_named_by_package(tmp_path: Path) -> None:
    served = tmp_path / "srv"
    # A GitHub tag archive: named by the tag, its folder by the repository.
    arch = tar_gz(served / "v1.0.tar.gz", "repo-1.0", pure_package("upkg", "1.0"))
    sha = pypi.sha256_of(arch)
    with http_server(served) as base:
        name = url.archive_name(f"{base}/v1.0.tar.gz", sha, "upkg", "1.0")
        assert name == f"upkg-1.0-{sha[:12]}.tar.gz"
        got = url.fetch_archive(f"{base}/v1.0.tar.gz", sha, tmp_path / "cache", name)
        assert pypi.sha256_of(got) == sha
        with pytest.raises(FetchError, match="sha256 mismatch") as exc:
            url.fetch_archive(f"{base}/v1.0.tar.gz", "0" * 64, tmp_path / "c2", name)
        assert "[source] sha256" in exc.value.fix
    assert not list((tmp_path / "c2").glob("*.tar.gz"))  # nothing kept of a wrong file
    with pytest.raises(ConfigError, match="archive type"):
        url.archive_name("https://example.org/download?id=3", sha, "upkg", "1.0")
    assert url.archive_name("https://x/y.zip", sha, "upkg", "1.0", "a-1.0.tar.xz") == "a-1.0.tar.xz"


def request(tmp_path: Path, **kw) -> WheelRequest:
    return WheelRequest("gpkg", "1.0", (), tmp_path / "wh", tmp_path / "cache", tmp_path, **kw)


def test_fetch_source_follows_the_recipe_and_the_lock_rebuilds_it(
    repo: Path, tmp_path: Path
) -> None:
    seen: list[str] = []
    recipe = Recipe("gpkg", "1.0", source=Source(kind="git", git=repo.as_uri(), rev="v1.0"))
    release, path = fetch.source(request(tmp_path), lambda t, m: seen.append(m), recipe)
    assert release.sdist_url.startswith(f"git+{repo.as_uri()}@")
    assert release.sdist_sha256 == pypi.sha256_of(path)
    assert any("is commit" in m for m in seen)
    lock = pypi.Lock(
        (
            pypi.LockEntry(
                "gpkg", "1.0", path.name, release.sdist_sha256, "sdist", release.sdist_url
            ),
        )
    )
    # A rebuild on a fresh cache makes the archive again from the locked commit, even after
    # the tag moved: the same bytes.
    commit_more(repo, {"gpkg/later.py": ""})
    again, copy = fetch.source(request(tmp_path / "re", pinned=lock), lambda t, m: None)
    assert copy.name == path.name and pypi.sha256_of(copy) == release.sdist_sha256
    assert again.sdist_url == release.sdist_url


def test_fetch_source_url_checks_folder(tmp_path: Path) -> None:
    served = tmp_path / "srv"
    arch = tar_gz(served / "v1.0.tar.gz", "repo-1.0", pure_package("gpkg", "1.0"))
    sha = pypi.sha256_of(arch)
    with http_server(served) as base:
        src = Source(kind="url", url=f"{base}/v1.0.tar.gz", sha256=sha, folder="repo-1.0")
        recipe = Recipe("gpkg", "1.0", source=src)
        release, path = fetch.source(request(tmp_path), lambda t, m: None, recipe)
        assert release.sdist_url == f"{base}/v1.0.tar.gz" and pypi.sha256_of(path) == sha
        bad = Source(kind="url", url=src.url, sha256=sha, folder="gpkg-1.0")
        with pytest.raises(FetchError, match="holds the folder 'repo-1.0'"):
            fetch.source(request(tmp_path), lambda t, m: None, Recipe("gpkg", "1.0", source=bad))


# --- [source] binary_wheel: which of PyPI's wheels a target takes ----------------------------


def _wheels(*names: str) -> list:
    from datetime import UTC, datetime

    from builder.sources.binary import BinaryWheel

    return [
        BinaryWheel(n, f"https://x/{n}", "0" * 64, datetime(2024, 1, 1, tzinfo=UTC)) for n in names
    ]


def test_binary_wheel_pick_follows_python_and_glibc() -> None:
    from builder.sources import binary

    ws = _wheels(
        "z-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "z-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "z-1.0-cp311-cp311-musllinux_1_1_x86_64.whl",
        "z-1.0-cp311-cp311-manylinux_2_39_x86_64.whl",  # newer than the stack's glibc
        "z-1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
        "z-1.0-cp312-abi3-manylinux_2_17_x86_64.whl",
        "z-1.0-py3-none-any.whl",
    )
    assert binary.pick(ws, "3.11", "2.36", "z").filename.endswith("cp311-manylinux_2_28_x86_64.whl")
    assert "manylinux2014" in binary.pick(ws, "3.11", "2.27", "z").filename
    assert (
        binary.pick(ws, "3.13", "2.36", "z").filename
        == "z-1.0-cp312-abi3-manylinux_2_17_x86_64.whl"
    )
    assert binary.pick(ws[-1:], "3.13", "2.36", "z").filename == "z-1.0-py3-none-any.whl"
    with pytest.raises(FetchError, match="no binary wheel for CPython 3.11 .* glibc 2.12") as exc:
        binary.pick(ws[:5], "3.11", "2.12", "z 1.0")
    assert "musllinux" in exc.value.message and "aarch64" not in exc.value.message
    assert "binary_wheel" in exc.value.fix
    assert binary.platforms("2.17")[:2] == ["manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def test_archives_that_are_not_sdists_get_the_version_for_setuptools_scm() -> None:
    from builder.sources import archive_build_env

    for kind in ("git", "url"):
        assert archive_build_env(kind, "2.1") == {"SETUPTOOLS_SCM_PRETEND_VERSION": "2.1"}
    for kind in ("pypi", "wheel"):  # an sdist carries PKG-INFO; a wheel is not built
        assert archive_build_env(kind, "2.1") == {}
