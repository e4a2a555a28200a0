"""Recipes: what a package needs beyond its sdist, one strictly checked `recipes/<name>.toml` each.

    [package]
    name = "biopython"
    import_names = ["Bio"]          # [] = no import test; no recipe = derived from the wheel
    pythons = ">=3.10"              # the Pythons it builds for (PEP 440 specifier)

    [source]                        # default: the PyPI sdist of `name` (or `pypi_name`)
    url = "https://example.org/x-{version}.tar.gz"   # or git = "..." with rev = "v{version}"
    sha256 = "..."                                   # or binary_wheel = true (repackage PyPI's)

    [build]
    requires = ["numpy>=2"]         # extra build wheels (PEP 508)
    env = { CFLAGS_EXTRA = "-g0" }
    patches = ["x-fix.patch"]       # recipes/patches/, applied in order with patch -p1
    pre_build = ["sed -i s/a/b/ setup.py"]   # shell in the source folder, same shell as the build
    config_settings = { "--build-option" = ["--cpp_ext"] }

    [system]
    apt = ["libfftw3-dev"]          # standalone image
    modules = ["fftw"]              # cvmfs stack: loaded for the build (runtime_modules: + test)

    [test]
    requires = ["numpy"]            # extra runtime test wheels (PEP 508)
    python = ["assert Bio.__version__"]       # run after importing import_names
    commands = ["python -c 'import Bio'"]

    [wheel]                         # edits of the built wheel, after repair
    remove_requires = ["nvidia-*"]
    update_requires = ["torch->torch-cpu", "numpy<2"]
    suffix = "-gpu"
    local_tags = ["torch27"]

    [versions."<1.80".test]         # overrides for the matching versions, key by key;
    requires = ["numpy<2"]          # later matching tables win
    [accelerators."cuda*".wheel]    # ... for matching accelerators (cpu, cuda12, ...)
    [targets."gentoo2023-*".build]  # ... for matching target ids (fnmatch; "!glob" negates)

Override tables nest (`[versions."<2".targets."*-x86-64-v4".build]`); at each level the
version tables apply first, then accelerator tables, then target tables, each in file order.

An unknown key is an error that names the file, line and closest valid key: the shell
configs this replaces silently ignored typos. Every key of `SECTIONS` carries its JSON schema, so
`schema()` (and `builder/data/recipe.schema.json`) is generated from the same table that checks.

Modules, each importing only those above it: `where` (a key's file and line, for messages),
`checks` (the value checkers), `fields` (the key table), `model` (Recipe, Source), `resolve`
(override matching), `load` (parse, check, load), `schema`, `toml_out`; `legacy` imports the
shell configs.
"""

from builder.recipes.checks import PATCHES_DIR, RENAME
from builder.recipes.fields import OVERRIDES, PROVIDER_KEYS, SECTIONS, Key
from builder.recipes.load import (
    BUILTIN_RECIPES,
    RecipeDirs,
    RecipeErrors,
    check_recipe,
    load_recipe,
    parse_recipe,
    read_recipe,
    recipe_path,
)
from builder.recipes.model import Recipe, Source, TargetLike
from builder.recipes.schema import SCHEMA_ID, schema, schema_text
from builder.recipes.toml_out import new_recipe_text, to_toml

__all__ = [
    "BUILTIN_RECIPES",
    "OVERRIDES",
    "PATCHES_DIR",
    "PROVIDER_KEYS",
    "RENAME",
    "SCHEMA_ID",
    "SECTIONS",
    "Key",
    "Recipe",
    "RecipeDirs",
    "RecipeErrors",
    "Source",
    "TargetLike",
    "check_recipe",
    "load_recipe",
    "new_recipe_text",
    "parse_recipe",
    "read_recipe",
    "recipe_path",
    "schema",
    "schema_text",
    "to_toml",
]
