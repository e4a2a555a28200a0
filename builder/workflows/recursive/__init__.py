"""Recursive builds: the dependencies a package needs that the wheelhouse does not hold for the
targets, found without building, then built first, in dependency order, through the same
pipeline, so that a package and its missing dependencies land together.

Where requirements come from, before any build:
- the sdist's PKG-INFO, when its Metadata-Version is 2.2 or later and `Requires-Dist` is not
  `Dynamic` (PEP 643: a backend must then produce exactly these);
- else pyproject.toml's `[project] dependencies`, when not listed in `dynamic` (PEP 621: static);
- else they are unknown before the build. An older PKG-INFO's `Requires-Dist` is then used as a
  hint for the order, and the built wheel's METADATA, the truth, is checked after the build: what
  it needs and the wheelhouse lacks is built next, and the package is run again if its own run
  failed (its test could not install what was missing).

"Held" is what a node's pip would find: a wheel of a satisfying version (local labels included,
`1.2+computecanada` satisfies `>=1.2`) whose tags the target's Python accepts, in the target's
folders in the layout's order `<stack>/<level>`, `<stack>/generic`, `generic`. A held wheel's
own requirements (its METADATA) are checked too: the node installs them from the same tree.

Modules: `requires` (what a package requires), `index` (where versions come from), `plan` (the
pure planner over an `Index` and a `Wheelhouse` view), `builds` (`build`: the side effects).
"""

from builder.workflows.recursive.builds import Outcome, build
from builder.workflows.recursive.index import Candidate, Index, PyPIIndex
from builder.workflows.recursive.plan import (
    DependencyCycle,
    DependencyError,
    Held,
    Missing,
    Plan,
    Step,
    Wheelhouse,
    plan,
)
from builder.workflows.recursive.requires import (
    Edits,
    Requires,
    marker_env,
    no_edits,
    recipe_edits,
    sdist_requires,
    wheel_requires,
)

__all__ = [
    "Candidate",
    "DependencyCycle",
    "DependencyError",
    "Edits",
    "Held",
    "Index",
    "Missing",
    "Outcome",
    "Plan",
    "PyPIIndex",
    "Requires",
    "Step",
    "Wheelhouse",
    "build",
    "marker_env",
    "no_edits",
    "plan",
    "recipe_edits",
    "sdist_requires",
    "wheel_requires",
]
