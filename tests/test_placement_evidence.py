"""Placement by evidence: a level build is kept for its level only when the recipe asks, when
its ISA scan holds more code above the baseline level than the baseline build, or when it links
a level folder's library of the stack. Real wheels holding real shared objects compiled here
(the isafixture kernel, and a scalar source that -march=x86-64-v4 leaves without AVX-512)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from builder.targets.model import load_stack
from builder.wheelhouse.layout import scan
from builder.wheelhouse.placement import Candidate, explain, level_specific, plan
from builder.wheels.isascan import WheelIsa, scan_wheel
from builder.wheels.repair import wheel_content_digest
from tests.test_isascan import build_so
from tests.test_placement import build

STACK = load_stack("gentoo2023")
GENERIC, V3, V4 = "gentoo2023/generic", "gentoo2023/x86-64-v3", "gentoo2023/x86-64-v4"
SCALAR = "long add(long a, long b) { return a + b; }\nlong mul(long a, long b) { return a * b; }\n"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("so")
    scalar = tmp / "scalar.c"
    scalar.write_text(SCALAR)
    out = {}
    for lv in ("x86-64-v3", "x86-64-v4"):
        out[f"kernel {lv}"] = build_so(tmp / f"k{lv}", lv).read_bytes()
        # As the real build links: the level in the ISA note, so the bytes differ.
        so = build_so(tmp / f"s{lv}", lv, f"-Wl,-z,{lv}", source=scalar)
        out[f"scalar {lv}"] = so.read_bytes()
    return out


def cands(tmp: Path, code: dict[str, bytes], **kw) -> list[Candidate]:
    out = []
    for lv, data in code.items():
        tid = f"gentoo2023-{lv}"
        wheel = build(tmp, tid, data)
        c = Candidate(tid, lv, wheel, wheel_content_digest(wheel), False, scan_wheel(wheel))
        out.append(replace(c, **kw))
    return out


def decide(tmp: Path, cs: list[Candidate]) -> dict[str, object]:
    wh = tmp / "wheelhouse"
    return {d.target_id: d for d in plan(cs, STACK, scan(wh, STACK))}


def test_v4_build_without_avx512_is_the_baseline(tmp_path: Path, objects) -> None:
    cs = cands(
        tmp_path,
        {
            "generic": objects["scalar x86-64-v3"],
            "x86-64-v3": objects["scalar x86-64-v3"],
            "x86-64-v4": objects["scalar x86-64-v4"],
        },
    )
    assert cs[2].content_digest != cs[0].content_digest  # different bytes, same code
    assert cs[2].isa.above["x86-64-v3"] == 0
    ds = decide(tmp_path, cs)
    assert ds["gentoo2023-generic"].folder == GENERIC
    for tid in ("gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"):
        assert ds[tid].folder is None and ds[tid].reason.startswith("same code as the baseline")
    assert "0 instructions above x86-64-v3" in ds["gentoo2023-x86-64-v4"].reason
    lines = explain(ds.values(), figures=True)
    assert any("above_baseline: 0" in line and "highest_level" in line for line in lines)


def test_v4_build_with_avx512_is_level_specific(tmp_path: Path, objects) -> None:
    cs = cands(
        tmp_path,
        {
            "generic": objects["kernel x86-64-v3"],
            "x86-64-v3": objects["kernel x86-64-v3"],
            "x86-64-v4": objects["kernel x86-64-v4"],
        },
    )
    ds = decide(tmp_path, cs)
    assert ds["gentoo2023-generic"].folder is None
    assert ds["gentoo2023-x86-64-v3"].folder == V3
    assert ds["gentoo2023-x86-64-v4"].folder == V4
    n = cs[2].isa.above["x86-64-v3"]
    assert n > 0 and f"{n:,} instructions above x86-64-v3 (highest: x86-64-v4)" in (
        ds["gentoo2023-x86-64-v4"].reason
    )
    assert ds["gentoo2023-x86-64-v4"].facts["above_baseline"] == n


def test_the_recipe_forces_either_way(tmp_path: Path, objects) -> None:
    avx = {
        "generic": objects["kernel x86-64-v3"],
        "x86-64-v4": objects["kernel x86-64-v4"],
    }
    ds = decide(tmp_path / "a", cands(tmp_path / "a", avx, per_level=False))
    assert ds["gentoo2023-generic"].folder == GENERIC and ds["gentoo2023-x86-64-v4"].folder is None
    assert "per_level = false" in ds["gentoo2023-x86-64-v4"].reason
    same = {"generic": objects["scalar x86-64-v3"], "x86-64-v4": objects["scalar x86-64-v3"]}
    ds = decide(tmp_path / "b", cands(tmp_path / "b", same, per_level=True))
    assert ds["gentoo2023-generic"].folder is None and ds["gentoo2023-x86-64-v4"].folder == V4


@dataclass(frozen=True)
class Figures:
    """ISA figures as data: the cases a compiler here does not make on demand."""

    highest_level: str | None
    instructions: int
    above: dict[str, int] = field(default_factory=dict)
    library_paths: tuple[str, ...] = ()


def _pair(tmp: Path, base: Figures, lv: Figures) -> tuple[Candidate, Candidate]:
    b = build(tmp, "gentoo2023-generic", b"base")
    v = build(tmp, "gentoo2023-x86-64-v4", b"v4")
    return (
        Candidate("gentoo2023-generic", "generic", b, wheel_content_digest(b), False, base),
        Candidate("gentoo2023-x86-64-v4", "x86-64-v4", v, wheel_content_digest(v), False, lv),
    )


def test_runtime_dispatch_in_both_builds_is_not_level_specific(tmp_path: Path) -> None:
    # numpy-like: both builds hold the same dispatched AVX-512 paths.
    dispatched = {"x86-64": 900, "x86-64-v2": 700, "x86-64-v3": 500}
    base, v4 = _pair(
        tmp_path,
        Figures("x86-64-v4", 10_000, dispatched),
        Figures("x86-64-v4", 10_010, dispatched),
    )
    v = level_specific(v4, base, STACK)
    assert not v.specific and "no more than the baseline build's 500" in v.why
    more = replace(v4, isa=Figures("x86-64-v4", 10_050, {**dispatched, "x86-64-v3": 540}))
    assert level_specific(more, base, STACK).specific


@pytest.mark.parametrize(
    "path",
    [
        "/cvmfs/soft.computecanada.ca/easybuild/software/2023/x86-64-v4/Core/openblas/lib",
        "/cvmfs/soft.computecanada.ca/easybuild/software/2023/avx512/Core/openblas/lib",
    ],
)
def test_linking_a_level_library_of_the_stack_is_level_specific(tmp_path: Path, path) -> None:
    base, v4 = _pair(
        tmp_path,
        Figures("x86-64-v3", 100, {"x86-64-v3": 0}),
        Figures("x86-64-v3", 100, {"x86-64-v3": 0}, (path,)),
    )
    v = level_specific(v4, base, STACK)
    assert v.specific and path in v.why and v.facts["level_libraries"] == [path]
    v3_path = path.replace("x86-64-v4", "x86-64-v3").replace("avx512", "avx2")
    plain = replace(v4, isa=Figures("x86-64-v3", 100, {"x86-64-v3": 0}, (v3_path,)))
    assert not level_specific(plain, base, STACK).specific


def test_wheel_isa_combines_its_members(tmp_path: Path, objects) -> None:
    wheel = build(tmp_path, "t", objects["kernel x86-64-v4"])
    isa: WheelIsa = scan_wheel(wheel)
    (member,) = isa.members
    assert member.member.endswith(".so") and member.isa is not None
    assert isa.highest_level == "x86-64-v4" and isa.instructions == member.isa.instructions
    assert isa.above == member.isa.above
