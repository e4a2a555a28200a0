"""Where inputs come from: PyPI (releases, downloads, sdist facts) and the lock."""
