"""Which targets build a wheel and which take another's: pure rules on the results.

- A source with no native code builds once, on the oldest Python; if the wheel is pure every
  other target takes it (and tests it on its own Python and level).
- Otherwise each level (and accelerator) builds first on its oldest Python; an `abi3` wheel
  from it serves the newer Pythons of that level (tested on each); any other wheel is one per
  interpreter, so they build their own.
"""

from __future__ import annotations

from builder.pipeline.model import TargetResult


def python_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def groups(
    results: list[TargetResult], native: bool
) -> list[tuple[TargetResult, list[TargetResult]]]:
    """(leader, followers): the leader builds first; each follower then takes the leader's
    wheel where `shared_kind` allows, else builds its own."""

    def oldest_first(rs: list[TargetResult]) -> list[TargetResult]:
        return sorted(rs, key=lambda r: python_key(r.target.python))

    if not native:
        first, *rest = oldest_first(results)
        return [(first, rest)]
    by_level: dict[tuple[str, str], list[TargetResult]] = {}
    for r in results:
        by_level.setdefault((r.target.level_name, r.target.accelerator), []).append(r)
    out = []
    for rs in by_level.values():
        first, *rest = oldest_first(rs)
        out.append((first, rest))
    return out


def shared_kind(leader: TargetResult) -> str | None:
    """ "pure" or "abi3" when the leader's wheel serves the other Pythons; else None."""
    if leader.wheel is None:
        return None
    if leader.is_pure:
        return "pure"
    # name-version-python-abi-platform.whl (a build tag would come before the python tag)
    return "abi3" if leader.wheel.name.removesuffix(".whl").split("-")[-2] == "abi3" else None
