"""The committed image definitions (`images/<target>/Containerfile` and `apptainer.def`): what a
person builds by hand; `cbuild images render` writes them and a test keeps them in sync."""

from __future__ import annotations

from builder.images.apptainer import DEF_NAME, render_apptainer
from builder.images.spec import render_containerfile
from builder.providers import spec_for
from builder.targets.model import Target


def rendered_files(targets: list[Target]) -> dict[str, str]:
    """Relative path -> text of every committed image definition."""
    out = {}
    for t in targets:
        spec = spec_for(t)
        out[f"{t.id}/Containerfile"] = render_containerfile(spec)
        out[f"{t.id}/{DEF_NAME}"] = render_apptainer(spec)
    return out
