"""The x86 instruction scan on real shared objects compiled here by the host gcc."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from builder.wheels.isascan import (
    ElfScanError,
    bench_scan,
    level_chain,
    make_bench_elf,
    scan_elf,
)

KERNEL = Path(__file__).parent / "fixtures/isafixture/src/isafixture/_kernel.c"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc to compile with")


def build_so(out: Path, march: str, *extra: str, source: Path = KERNEL) -> Path:
    """The isafixture kernel (or `source`) as a real shared object for `march`."""
    include = sysconfig.get_paths()["include"]
    cmd = ["gcc", "-shared", "-fPIC", "-O2", f"-march={march}", f"-I{include}", str(source)]
    subprocess.run([*cmd, *extra, "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def sos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc to compile with")
    d = tmp_path_factory.mktemp("so")
    return {
        "v3": build_so(d / "v3.so", "x86-64-v3"),
        "v4": build_so(d / "v4.so", "x86-64-v4", "-Wl,-z,x86-64-v4"),
        "base": build_so(d / "base.so", "x86-64", "-fcf-protection=full"),
    }


def test_level_chain_comes_from_archspec() -> None:
    assert level_chain()[:4] == ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")


def test_v3_build_contains_v3_and_nothing_above(sos: dict[str, Path]) -> None:
    isa = scan_elf(sos["v3"])
    assert isa.scanned and ".text" in isa.sections
    assert isa.highest_level == "x86-64-v3"
    assert isa.features.get("AVX", 0) > 0  # the kernel's ymm vaddpd
    assert "AVX512F" not in isa.features
    assert isa.above["x86-64-v3"] == 0
    assert isa.above["x86-64-v2"] == isa.per_level["x86-64-v3"] > 0
    assert isa.isa_needed is None  # -march alone records no ISA note


def test_v4_build_contains_v4_instructions(sos: dict[str, Path]) -> None:
    isa = scan_elf(sos["v4"])
    assert isa.highest_level == "x86-64-v4"
    assert isa.features["AVX512F"] > 0  # the kernel's zmm vaddpd
    assert isa.above["x86-64-v3"] == isa.per_level["x86-64-v4"] > 0
    assert isa.above["x86-64-v4"] == 0
    assert isa.isa_needed == "x86-64-v4"  # -Wl,-z,x86-64-v4


def test_baseline_build_with_cet_hints_stays_baseline(sos: dict[str, Path]) -> None:
    isa = scan_elf(sos["base"])
    # endbr64 (CET_IBT) is a reserved NOP on CPUs without CET: reported, but baseline.
    assert isa.features.get("CET_IBT", 0) > 0
    assert isa.outside_levels == {}
    assert isa.highest_level == "x86-64"
    assert isa.above["x86-64"] == 0


def test_loader_facts(tmp_path: Path, sos: dict[str, Path]) -> None:
    isa = scan_elf(sos["v3"])
    assert "libc.so.6" in isa.needed
    assert isa.glibc is not None and isa.symbol_versions["GLIBC"].startswith("2.")
    run = build_so(tmp_path / "r.so", "x86-64-v3", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib")
    old = build_so(tmp_path / "o.so", "x86-64-v3", "-Wl,--disable-new-dtags,-rpath,/opt/x:/y")
    named = build_so(tmp_path / "n.so", "x86-64-v3", "-Wl,-soname,libkernel.so.1")
    assert scan_elf(run).runpath == ("$ORIGIN/lib",)
    assert scan_elf(old).rpath == ("/opt/x", "/y")
    assert scan_elf(named).soname == "libkernel.so.1"


@needs_gcc
def test_features_outside_every_level(tmp_path: Path) -> None:
    src = tmp_path / "x.c"
    src.write_text(
        'void aes(void *p) { __asm__ volatile("aesenc (%0), %%xmm1" :: "r"(p) : "xmm1"); }\n'
        'void vnni(void *p) { __asm__ volatile("vpdpbusd (%0), %%zmm1, %%zmm2" '
        ':: "r"(p) : "xmm1", "xmm2"); }\n'
    )
    isa = scan_elf(build_so(tmp_path / "x.so", "x86-64", source=src))
    assert isa.outside_levels == {"AES": 1, "AVX512_VNNI": 1}
    # vpdpbusd zmm also needs AVX512F: a v4 instruction besides its VNNI.
    assert isa.highest_level == "x86-64-v4"
    assert isa.above["x86-64-v3"] == 1
    # aesenc alone needs no level (AES is outside them): baseline by the levels' measure.
    assert isa.per_level["x86-64"] >= 1


def test_not_an_elf(tmp_path: Path) -> None:
    p = tmp_path / "fake.so"
    p.write_text("INPUT(-lfoo)\n")  # a linker script named like a library
    with pytest.raises(ElfScanError, match="not an ELF file"):
        scan_elf(p)
    with pytest.raises(ElfScanError, match="no such file"):
        scan_elf(tmp_path / "missing.so")


def test_truncated_elf_is_a_clear_error(tmp_path: Path, sos: dict[str, Path]) -> None:
    p = tmp_path / "cut.so"
    p.write_bytes(sos["v3"].read_bytes()[:200])
    with pytest.raises(ElfScanError, match="unreadable ELF"):
        scan_elf(p)


@needs_gcc
@pytest.mark.skipif(shutil.which("objcopy") is None, reason="no objcopy (binutils)")
def test_bench_on_a_generated_object(tmp_path: Path) -> None:
    big = make_bench_elf(tmp_path / "big.so", megabytes=2)
    result = bench_scan(big)
    assert result["bytes"] >= 1_900_000
    assert result["mb_per_s"] > 0 and result["seconds"] > 0
    assert result["highest_level"] == "x86-64-v3"
