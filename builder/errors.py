"""Every failure a user can cause or meet, each with its exit code and a fix to suggest.

Modelled on cibuildwheel's errors: the CLI catches `CbuildError` and prints one clear message;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CbuildError(Exception):
    exit_code = 2

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message + (f"\n  fix: {self.fix}" if self.fix else "")


class ConfigError(CbuildError):
    """Bad input on the command line or in a recipe."""

    exit_code = 2


class FetchError(CbuildError):
    """A package, version or file could not be had from the index."""

    exit_code = 3


class EngineError(CbuildError):
    """No container engine, or the engine refused an operation."""

    exit_code = 4


class BuildError(CbuildError):
    """The package did not build; carries the log's path and tail."""

    exit_code = 5


class PlacementError(CbuildError):
    """The wheelhouse refused a wheel (exists, not writable, rules)."""

    exit_code = 6


class TestFailure(CbuildError):
    """A built wheel failed its tests; nothing is exported."""

    exit_code = 7
    __test__ = False  # not a pytest class
