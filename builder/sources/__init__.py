"""Where inputs come from: PyPI (releases, downloads, sdist facts) and the lock."""

from __future__ import annotations


def archive_build_env(kind: str, version: str) -> dict[str, str]:
    """What a build of a `kind` source needs besides its files. A git commit's or a URL's
    archive is no sdist: it has neither PKG-INFO nor .git, so setuptools-scm (and hatch-vcs,
    which uses it) cannot find the version and stops the build. The requested version stands
    in; other backends ignore the variable, and a recipe's [build] env still overrides it."""
    if kind in ("git", "url"):
        return {"SETUPTOOLS_SCM_PRETEND_VERSION": version}
    return {}
