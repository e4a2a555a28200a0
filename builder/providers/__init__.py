"""Stack providers: where a target's toolchain comes from: a standalone image, or the site's real
stack from CVMFS. `PROVIDERS` is the registry; `spec_for` gives a target's image spec and
`choose` turns `--provider auto` into one of them, saying why."""

from __future__ import annotations

from collections.abc import Callable

from builder.errors import CbuildError, ConfigError
from builder.images.spec import ImageSpec
from builder.providers.base import Provider, PythonSource
from builder.providers.cvmfs import CvmfsProvider
from builder.providers.standalone import StandaloneProvider
from builder.targets.model import Target, load_stack, stack_names

# name (a target's `provider`, a `[providers.<name>]` table in the stack data) -> factory
PROVIDERS: dict[str, Callable[[], Provider]] = {
    "standalone": StandaloneProvider,
    "cvmfs": CvmfsProvider,
}
CHOICES = (*PROVIDERS, "auto")


def get_provider(name: str) -> Provider:
    if name not in PROVIDERS:
        raise ConfigError(
            f"unknown provider {name!r}", fix=f"known providers: {', '.join(PROVIDERS)}"
        )
    return PROVIDERS[name]()


def choose(name: str) -> tuple[str, str]:
    """`--provider NAME` as a registered provider, and why: `auto` is cvmfs where every stack
    that has a cvmfs table has its profile here, standalone otherwise."""
    if name != "auto":
        get_provider(name)  # an unknown name is an error naming the known ones
        return name, f"--provider {name}"
    cvmfs = CvmfsProvider()
    stacks = [load_stack(n) for n in stack_names()]
    stacks = [st for st in stacks if cvmfs.name in st.providers]
    missing = [cvmfs.settings(st).profile_path for st in stacks if not cvmfs.available(st)]
    if stacks and not missing:
        where = ", ".join(cvmfs.status(st)["host_path"] for st in stacks)
        return cvmfs.name, f"auto: the stack is mounted here ({where})"
    why = f"no {', '.join(missing)} here" if missing else "no stack has a cvmfs table"
    return "standalone", f"auto: {why}"


def unbuildable(targets: list[Target]) -> dict[Target, CbuildError]:
    """The targets their provider cannot build here, with why and the fix (a Python's source
    that no mirror serves, say); asked once per provider and Python, not per level."""
    why: dict[tuple[str, str, str], CbuildError | None] = {}
    out = {}
    for t in targets:
        key = (t.provider, t.stack.name, t.python)
        if key not in why:
            why[key] = get_provider(t.provider).unavailable(t)
        if why[key]:
            out[t] = why[key]
    return out


def spec_for(target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
    """The target's image, made by its provider; a recipe's system packages make an image of
    their own (a different definition, so a different hash and tag)."""
    return get_provider(target.provider).image_spec(target, extra_packages)


__all__ = [
    "CHOICES",
    "PROVIDERS",
    "CvmfsProvider",
    "Provider",
    "PythonSource",
    "choose",
    "get_provider",
    "spec_for",
    "unbuildable",
]
