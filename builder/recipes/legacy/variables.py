"""The legacy variables build_wheel.sh reads from a config, and the two ways a statement fails
to convert (Unconvertible while converting, Skipped in the report)."""

from __future__ import annotations

from dataclasses import dataclass

# Every variable build_wheel.sh reads from a config, and what it means (issue 4).
LEGACY_VARIABLES = {
    "PYTHON_DEPS": "extra pip packages for build and test",
    "MODULE_BUILD_DEPS": "stack modules at build",
    "MODULE_RUNTIME_DEPS": "stack modules at build and test",
    "PRE_DOWNLOAD_COMMANDS": "shell before the download",
    "PACKAGE_DOWNLOAD_ARGUMENT": "what to download (name, URL or repository)",
    "PACKAGE_DOWNLOAD_NAME": "download file name",
    "PACKAGE_DOWNLOAD_METHOD": "how to download (pip, Git, ...)",
    "PACKAGE_DOWNLOAD_CMD": "the download command",
    "POST_DOWNLOAD_COMMANDS": "shell after the download",
    "PACKAGE_FOLDER_NAME": "top folder in the archive",
    "PATCHES": "patch files, applied in order",
    "PRE_BUILD_COMMANDS": "shell before the build",
    "BDIST_WHEEL_ARGS": "setup.py bdist_wheel arguments",
    "PIP_WHEEL_ARGS": "pip wheel arguments",
    "POST_BUILD_COMMANDS": "shell after the build",
    "UPDATE_REQUIREMENTS": "requirement updates on the built wheel",
    "RPATH_TO_ADD": "RPATH additions",
    "RPATH_ADD_ORIGIN": "add $ORIGIN to the RPATH",
    "PYTHON_IMPORT_NAME": "import name",
    "PYTHON_TESTS": "Python run after the import",
    "TEST_COMMAND": "replaces the import test",
    "PRE_TEST_COMMANDS": "shell before the tests",
    "PACKAGE_SUFFIX": "distribution name suffix",
    "PYTHON_VERSIONS": "the Pythons to build for",
    "PATCH_WHEEL_COMMANDS": "shell on the wheel archive",
}
# Also read by build_wheel.sh; their cbuild meaning is simple enough to convert.
_DEFAULTS_VARS = {"PYTHON_DEPS_DEFAULT", "MODULE_BUILD_DEPS_DEFAULT"}
_STACK_VAR = "EBVERSIONGENTOO"


class Unconvertible(Exception):
    """Why one statement or value has no faithful recipe form."""


@dataclass(frozen=True)
class Skipped:
    line: int
    text: str
    reason: str
