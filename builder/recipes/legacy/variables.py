"""The legacy variables build_wheel.sh reads from a config, and the two ways a statement fails
to convert (Unconvertible while converting, Skipped in the report)."""

from __future__ import annotations

import re
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
# What build_wheel.sh has exported when it sources a config, with its value.
BUILDER_ENV = {
    "TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX",
    "CUDAARCHS": "80;90;90-virtual",
    "CARGO_BUILD_JOBS": "default",
    "THIS_SCRIPT": "build_wheel.sh",
}
# Set by the legacy build node's environment (modules, Slurm, the shell) with values only it
# knows: a config that expands one when it is read has no recipe form.
LEGACY_ENV = re.compile(
    r"EB(ROOT|VERSION)\w+|CPATH|LIBRARY_PATH|LD_LIBRARY_PATH|PATH|HOME|PWD|USER|MKLROOT|"
    r"CUDA_HOME|NIXUSER_PROFILE|SLURM_\w+|RSNT_\w+|SCRIPT_DIR|MODULEPATH\w*|PYTHON_VERSION"
)


class Unconvertible(Exception):
    """Why one statement or value has no faithful recipe form."""


@dataclass(frozen=True)
class Skipped:
    line: int
    text: str
    reason: str
