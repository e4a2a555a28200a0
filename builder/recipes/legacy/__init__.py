"""Import of the legacy shell configs (`config/<pkg>.sh`, sourced by build_wheel.sh) as recipes.

What converts: assignments of the ~30 legacy variables, expanded as bash did when it read the
config; `if`/`elif`/`else` on the stack year, the version (also build_wheel.sh's
`translate_version` comparisons) and tests with one answer for cbuild (`-n $EBROOTGENTOO`,
`$THIS_SCRIPT`), as `[targets."gentoo2023-*"]` / `[versions."<1.2"]` override tables. Known
idioms convert too: GitHub tag archives, `git+URL@rev` and git-clone-then-tar become
`[source] git`; manipulate_wheels.py calls `[wheel]` edits; exports in PRE_DOWNLOAD_COMMANDS and
PRE_BUILD_COMMANDS `[build] env` or the start of pre_build.

What does not convert is listed per file with its line and the reason, never guessed; what had
no effect in the legacy build either (a misspelt variable) is a note. tools/legacy_measure.py
checks both against bash sourcing each config.
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
