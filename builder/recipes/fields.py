"""The recipe keys, one table: per section, each key's checker, JSON schema, documentation and
the Recipe attribute it fills. Checking (load), `recipe show` (model) and the schema all read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.recipes import checks
from builder.recipes.checks import Checker


@dataclass(frozen=True)
class Key:
    check: Checker
    attr: str  # Recipe attribute, or "source.<attr>"
    schema: dict[str, Any]
    doc: str
    merge: str = "replace"  # replace | update (tables: an override sets or changes entries)
    overridable: bool = True


def _k(check: Checker, attr: str, doc: str, kind: str, **kw: Any) -> Key:
    """A key whose JSON schema is a string, a list of strings, a boolean, or `schema=`."""
    schema = (
        kw.pop("schema", None)
        or {
            "str": {"type": "string"},
            "list": {"type": "array", "items": {"type": "string"}},
            "bool": {"type": "boolean"},
        }[kind]
    )
    return Key(check, attr, {**schema, "description": doc}, doc, **kw)


_STR_TABLE = {"type": "object", "additionalProperties": {"type": "string"}}

# Keys only a provider acts on, as "section.key": each provider's `honours` names those it does
# (builder.providers.base.Provider). A recipe that sets one its target's provider does not honour
# is refused before any work; `recipe check` refuses one that no provider honours.
PROVIDER_KEYS = frozenset({"system.modules", "system.runtime_modules"})
# Keys that give the image its own way to what a provider key names: a recipe with Debian
# packages for the image has modules only for the providers that load them (pyfftw: apt + fftw).
PROVIDER_KEY_ALTERNATIVES = {"system.modules": "system.apt", "system.runtime_modules": "system.apt"}

SECTIONS: dict[str, dict[str, Key]] = {
    "package": {
        "name": _k(
            checks.string,
            "name",
            "Project name; must match the file name.",
            "str",
            overridable=False,
        ),
        "import_names": _k(
            checks.import_names,
            "import_names",
            "Modules the import test imports; [] for none (default: derived "
            "from the wheel). Legacy PYTHON_IMPORT_NAME.",
            "list",
        ),
        "pythons": _k(
            checks.specifier,
            "pythons",
            "PEP 440 specifier of the Pythons to build for. Legacy PYTHON_VERSIONS.",
            "str",
        ),
        "accelerators": _k(
            checks.accelerators,
            "accelerators",
            "The accelerators built for (cpu, cuda12, cuda13): --all-targets takes the "
            "targets of these; naming another is refused. Default: cpu.",
            "list",
            overridable=False,
        ),
    },
    "source": {
        "pypi_name": _k(
            checks.project_name,
            "source.pypi_name",
            "Project name on PyPI when it differs. Legacy PACKAGE_DOWNLOAD_ARGUMENT.",
            "str",
        ),
        "url": _k(
            checks.url,
            "source.url",
            "Source archive URL ({version} is replaced); needs sha256.",
            "str",
        ),
        "sha256": _k(checks.sha256, "source.sha256", "sha256 of the archive at url.", "str"),
        "git": _k(
            checks.git,
            "source.git",
            "Git repository; rev picks the tag or commit. Pinned to a commit and "
            "archived at fetch time. Legacy PACKAGE_DOWNLOAD_METHOD=Git.",
            "str",
        ),
        "rev": _k(
            checks.template, "source.rev", "Tag or commit of git ({version} is replaced).", "str"
        ),
        "submodules": _k(checks.boolean, "source.submodules", "Fetch git submodules too.", "bool"),
        "binary_wheel": _k(
            checks.boolean,
            "source.kind",
            "Repackage PyPI's binary wheel for the target's Python instead of building: "
            "retagged linux_*, labelled, nvidia-* requirements removed, [wheel] edits applied.",
            "bool",
        ),
        "filename": _k(
            checks.template,
            "source.filename",
            "Download file name ({version} is replaced). Legacy PACKAGE_DOWNLOAD_NAME.",
            "str",
        ),
        "folder": _k(
            checks.template,
            "source.folder",
            "Top folder inside the archive ({version} is replaced). Legacy PACKAGE_FOLDER_NAME.",
            "str",
        ),
    },
    "build": {
        "requires": _k(
            checks.requirements,
            "build_requires",
            "Extra build requirements (PEP 508), fetched as wheels. Legacy PYTHON_DEPS.",
            "list",
        ),
        "env": _k(
            checks.env,
            "env",
            "Environment variables of the build.",
            "table",
            merge="update",
            schema=_STR_TABLE,
        ),
        "patches": _k(
            checks.patches,
            "patches",
            "Patch files under recipes/patches/, applied in order with patch -p1 "
            "after unpacking. Legacy PATCHES.",
            "list",
        ),
        "pre_build": _k(
            checks.commands,
            "pre_build",
            "Shell commands run in the source folder before the build, in the "
            "build's shell ($VERSION is set). Legacy PRE_BUILD_COMMANDS.",
            "list",
        ),
        "post_build": _k(
            checks.commands,
            "post_build",
            "Shell commands run after the build, before repair; $WHEEL is the "
            "built wheel. Legacy POST_BUILD_COMMANDS.",
            "list",
        ),
        "config_settings": _k(
            checks.config_settings,
            "config_settings",
            "PEP 517 config settings (pip -C key=value; a list repeats the "
            "key). Legacy PIP_WHEEL_ARGS, BDIST_WHEEL_ARGS.",
            "table",
            merge="update",
            schema={
                "type": "object",
                "additionalProperties": {
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
            },
        ),
        "cuda_archs": _k(
            checks.cuda_archs,
            "cuda_archs",
            "GPU architectures of a CUDA target, in CMake's notation ('80-real;90': SASS for "
            "both, PTX for 90), instead of the stack's; each checked against the toolkit.",
            "str",
        ),
        "once": _k(
            checks.boolean,
            "build_once",
            "A pure or abi3 wheel: one build serves every target.",
            "bool",
        ),
    },
    "system": {
        "apt": _k(checks.apt, "apt", "Debian packages for the standalone image.", "list"),
        "modules": _k(
            checks.modules,
            "modules",
            "Stack modules loaded for the build (cvmfs). Legacy MODULE_BUILD_DEPS.",
            "list",
        ),
        "runtime_modules": _k(
            checks.modules,
            "runtime_modules",
            "Stack modules loaded for build and test (cvmfs). Legacy MODULE_RUNTIME_DEPS.",
            "list",
        ),
    },
    "test": {
        "requires": _k(
            checks.requirements,
            "test_requires",
            "Extra test requirements (PEP 508), fetched as wheels.",
            "list",
        ),
        "pre_commands": _k(
            checks.commands,
            "test_pre_commands",
            "Shell commands run in the test venv before the tests. Legacy PRE_TEST_COMMANDS.",
            "list",
        ),
        "python": _k(
            checks.commands,
            "test_python",
            "Python code run after importing import_names. Legacy PYTHON_TESTS.",
            "list",
        ),
        "commands": _k(
            checks.commands,
            "test_commands",
            "Shell test commands. Legacy TEST_COMMAND (with import_names = []).",
            "list",
        ),
    },
    "wheel": {
        "add_requires": _k(
            checks.requirements,
            "add_requires",
            "Requirements added to the built wheel (PEP 508).",
            "list",
        ),
        "remove_requires": _k(
            checks.requirement_names,
            "remove_requires",
            "Requirements removed from the built wheel, by name or pattern.",
            "list",
        ),
        "update_requires": _k(
            checks.requirement_updates,
            "update_requires",
            "Requirements replaced by name, markers kept ('numpy<2'), or "
            "renamed ('a->b'). Legacy UPDATE_REQUIREMENTS.",
            "list",
        ),
        "suffix": _k(
            checks.suffix,
            "suffix",
            "Appended to the distribution name ('-gpu'). Legacy PACKAGE_SUFFIX.",
            "str",
        ),
        "local_tags": _k(
            checks.local_tags,
            "local_tags",
            "Local version tags before the site label (1.0+torch27.computecanada).",
            "list",
        ),
        "rpath": _k(
            checks.str_list,
            "rpath",
            "RPATH entries added to the wheel's libraries. Legacy RPATH_TO_ADD.",
            "list",
        ),
        "rpath_origin": _k(
            checks.boolean,
            "rpath_origin",
            "Add $ORIGIN to the RPATH. Legacy RPATH_ADD_ORIGIN.",
            "bool",
        ),
        "rpath_packages": _k(
            checks.site_folders,
            "rpath_packages",
            "Library folders of other packages of the same environment, by their path in "
            "site-packages ('torch/lib'): added to every library's RPATH relative to $ORIGIN, "
            "so libtorch.so loads without LD_LIBRARY_PATH.",
            "list",
        ),
        "replace_vendored": _k(
            checks.vendored_patterns,
            "replace_vendored",
            "Libraries auditwheel vendored (<pkg>.libs/) to drop, by file or soname pattern "
            "('libffi*', 'libgomp*->libgomp.so.1'): dependents then need the soname they copy, "
            "found through [wheel] rpath or the system's. The rest are kept.",
            "list",
        ),
        "per_level": _k(
            checks.boolean,
            "per_level",
            "true: every CPU level keeps its own build; false: the baseline build serves "
            "every level (gentoo2023/generic). Default: decided from the ISA scan.",
            "bool",
        ),
    },
}
# Override table kinds, in the order they apply at each level.
OVERRIDES = ("versions", "accelerators", "targets")
