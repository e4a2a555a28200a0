"""Import of the legacy shell configs (`config/<pkg>.sh`, sourced by build_wheel.sh) as recipes.

What converts: variable assignments of the ~30 legacy variables, `${VERSION}` uses, and
`if`/`elif`/`else` on the stack year (`$EBVERSIONGENTOO == 2023`) or on the version
(`$VERSION == 1.2.*`), which become `[targets."gentoo2023-*"]` and `[versions."==1.2.*"]`
override tables (nested for nested conditions, negated for `else`). Known idioms convert too:
the git-clone-then-tar download becomes `[source] git`, manipulate_wheels.py calls become
`[wheel]` edits, `export NAME=value` in build commands becomes `[build] env`.

What does not convert is listed per file with its line and the reason, never guessed:
arbitrary shell at the top level, `exit`, calls to other scripts, command substitutions where a
typed field is needed, variables only the legacy build environment sets, conditions other than
the stack year and the version, and a URL source whose sha256 the config does not record.
"""

from builder.recipes.legacy.importer import LegacyResult, convert, import_configs, package_of
from builder.recipes.legacy.variables import LEGACY_VARIABLES, Skipped

__all__ = [
    "LEGACY_VARIABLES",
    "LegacyResult",
    "Skipped",
    "convert",
    "import_configs",
    "package_of",
]
