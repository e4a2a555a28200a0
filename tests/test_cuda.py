"""CUDA groundwork: GPU architectures (targets.gpu), the toolkits' image layer (images.cuda) and
the device-code scan (wheels.cuda). The integration test installs both toolkits in the standalone
image, compiles a kernel twice, and checks the scan against cuobjdump."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.images import cuda as tk_mod
from builder.images.cuda import (
    CUOBJDUMP,
    TOOLKITS,
    build_env,
    cuobjdump_path,
    cuobjdump_steps,
    image_env,
    install_steps,
    toolkit,
    toolkit_layer,
    with_toolkit,
)
from builder.targets.gpu import GpuArchs, check_known
from builder.targets.model import load_stack
from builder.wheels.cuda import (
    FATBIN_MAGIC,
    FatbinError,
    check_device_code,
    parse_fatbin,
    scan_device_code,
    scan_wheel_device_code,
)
from builder.wheels.isascan import ElfScanError

# `nvcc --list-gpu-code` of the two toolkits, as measured.
LIST_13 = "\n".join(f"sm_{a}" for a in (75, 80, 86, 87, 88, 89, 90, 100, 110, 103, 120, 121))
LIST_12 = "\n".join(f"sm_{a}" for a in (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90))

# ---------------------------------------------------------------------- a hand-built fatbin


def entry(kind: int, arch: int, payload: bytes, flags: int = 0x11, ptx=(0, 9)) -> bytes:
    """One entry as nvcc writes it: a 64-byte header, then the payload."""
    minor, major = ptx if kind == 1 else (8, 1)
    head = struct.pack("<HHIQIIHHIIIQQQ", kind, 0x101, 64, len(payload), 0, 0, minor, major,
                       arch, 0, 0, flags, 0, 0)  # fmt: skip
    assert len(head) == 64
    return head + payload


def container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


ELF_PAYLOAD = b"\x7fELF" + b"\0" * 28
FATBIN = (
    container(entry(2, 80, ELF_PAYLOAD), entry(2, 90, ELF_PAYLOAD))
    + b"\0" * 8  # alignment padding between containers
    + container(
        entry(2, 80, ELF_PAYLOAD),
        entry(2, 90, ELF_PAYLOAD, flags=0x100011),  # sm_90a
        entry(1, 90, b"(\xb5/\xfd" + b"\0" * 12, flags=0x8011),  # zstd-compressed PTX 9.0
    )
)


def test_parse_fatbin_lists_every_entry():
    entries = parse_fatbin(FATBIN)
    assert [e.name for e in entries] == ["sm_80", "sm_90", "sm_80", "sm_90a", "compute_90"]
    ptx = entries[-1]
    assert (ptx.kind, ptx.compression, ptx.ptx_version, ptx.debug) == ("ptx", "zstd", "9.0", False)
    assert entries[0].compression is None and entries[0].ptx_version is None
    assert parse_fatbin(container(entry(2, 80, ELF_PAYLOAD, flags=0x13)))[0].debug


def test_parse_fatbin_family_and_lz4():
    e = parse_fatbin(container(entry(2, 100, ELF_PAYLOAD, flags=0x200011 | 0x2000)))[0]
    assert (e.name, e.compression) == ("sm_100f", "lz4")


def test_parse_fatbin_refuses_what_does_not_add_up():
    with pytest.raises(FatbinError, match="runs past the end"):
        parse_fatbin(FATBIN[:40])
    with pytest.raises(FatbinError, match="no fatbin container"):
        parse_fatbin(b"not a fatbin at all")
    bad = bytearray(container(entry(2, 80, ELF_PAYLOAD)))
    struct.pack_into("<Q", bad, 16 + 8, 10_000)  # the entry claims more than its container
    with pytest.raises(FatbinError, match="runs past its container"):
        parse_fatbin(bytes(bad))
    assert parse_fatbin(b"") == () and parse_fatbin(b"\0" * 16) == ()


def test_scan_bare_fatbin_file(tmp_path):
    f = tmp_path / "k.fatbin"
    f.write_bytes(FATBIN)
    code = scan_device_code(f)
    assert code.sass == ("sm_80", "sm_90", "sm_90a") and code.ptx == ("compute_90",)
    assert code.has_device_code and len(code.entries) == 5
    with pytest.raises(ElfScanError, match="not an ELF file"):
        scan_device_code(Path(__file__))


@pytest.fixture
def so_with_fatbin(tmp_path) -> Path:
    """A host shared object with the hand-built fatbin in `.nv_fatbin`, as nvcc places it."""
    if not (shutil.which("gcc") and shutil.which("objcopy")):
        pytest.skip("needs gcc and objcopy")
    (tmp_path / "h.c").write_text("int host(int x) { return x + 1; }\n")
    (tmp_path / "blob").write_bytes(FATBIN)
    so = tmp_path / "libk.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", so, tmp_path / "h.c"], check=True)
    subprocess.run(["objcopy", "--add-section", f".nv_fatbin={tmp_path / 'blob'}", so], check=True)
    return so


def test_scan_elf_and_wheel(so_with_fatbin, tmp_path):
    code = scan_device_code(so_with_fatbin)
    assert code.sass == ("sm_80", "sm_90", "sm_90a") and code.ptx == ("compute_90",)
    assert code.as_dict()["has_device_code"] is True
    wheel = tmp_path / "k-1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(so_with_fatbin, "k/libk.so")
        zf.write(so_with_fatbin.parent / "h.c", "k/h.c")
        zf.write("/bin/true", "k/bin/true")  # host code: an ELF without device code
    codes = scan_wheel_device_code(wheel)
    assert [c.path for c in codes] == ["k/libk.so", "k/bin/true"]
    assert not codes[1].has_device_code and codes[1].sass == ()
    assert check_device_code(codes, GpuArchs.of("80;90", ptx="90")) == ()


def code_of(sass: tuple[str, ...] = (), ptx: tuple[str, ...] = (), path: str = "k.so"):
    entries = [entry(2, int(a.rstrip("af")), ELF_PAYLOAD) for a in sass]
    entries += [entry(1, int(a), b"ptx") for a in ptx]
    from builder.wheels.cuda import _device_code

    found = parse_fatbin(container(*entries)) if entries else ()
    return _device_code(path, found)


def test_check_device_code_names_what_is_missing():
    promised = GpuArchs.of("80;90", ptx="90")
    assert check_device_code([code_of(("80", "90"), ("90",))], promised) == ()
    (msg,) = check_device_code([code_of(("80",), ("80",))], promised)
    assert msg == "k.so lacks sm_90, compute_90 (PTX) (it carries sm_80, compute_80)"
    (msg,) = check_device_code([code_of(), code_of(path="b.so")], promised)
    assert "carries no device code at all" in msg and "fell back to CPU" in msg
    assert "none of its 2 ELF file(s)" in msg
    (msg,) = check_device_code([], promised)
    assert "no ELF file" in msg
    # host-only files beside device code are fine; each file with device code is checked
    ok = code_of(("80", "90"), ("90",))
    assert check_device_code([ok, code_of(path="host.so")], promised) == ()


def test_arch_specific_sass_counts_ptx_does_not():
    promised = GpuArchs.of("90", ptx="90")
    code = parse_fatbin(
        container(entry(2, 90, ELF_PAYLOAD, flags=0x100011), entry(1, 90, b"p", flags=0x100011))
    )
    from builder.wheels.cuda import _device_code

    (msg,) = check_device_code([_device_code("k.so", code)], promised)
    assert "lacks compute_90 (PTX)" in msg and "sm_90" not in msg.split("lacks")[1].split("(")[0]


# ---------------------------------------------------------------------- architectures


def test_gpu_archs_conventions():
    a = GpuArchs.of("90;80", ptx="90")
    assert a.sass == ("80", "90") and a.ptx == ("90",)
    assert a.cmake() == "80-real;90"
    assert a.torch() == "8.0;9.0+PTX"
    assert a.gencode() == (
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=[sm_90,compute_90]",
    )
    assert a.describe() == "sm_80, sm_90 + PTX compute_90"
    assert GpuArchs.parse_cmake(a.cmake()) == a
    b = GpuArchs.parse_cmake("70-real;80-real;90-real;90-virtual")
    assert b == GpuArchs(("70", "80", "90"), ("90",)) and b.cmake() == "70-real;80-real;90"
    ptx_only = GpuArchs((), ("100",))
    assert ptx_only.cmake() == "100-virtual"
    assert ptx_only.gencode() == ("-gencode=arch=compute_100,code=compute_100",)
    assert GpuArchs.of("sm_90a, 100f").torch() == "9.0a;10.0f"


def test_gpu_archs_refuse_what_a_build_machine_decides():
    with pytest.raises(ConfigError, match="native"):
        GpuArchs.parse_cmake("native")
    with pytest.raises(ConfigError, match="not a GPU architecture"):
        GpuArchs.of("8.0")
    with pytest.raises(ConfigError, match="no GPU architecture"):
        GpuArchs.of("")
    with pytest.raises(ConfigError, match="-real and -virtual"):
        GpuArchs.parse_cmake("80-fake")


def test_check_known_against_list_gpu_code():
    assert check_known(DEFAULTS["13"], LIST_13) == ()
    assert check_known(DEFAULTS["12"], LIST_12) == ()
    # CUDA 13 cannot target compute < 7.5: the CUDA 12 default is refused there
    problems = check_known(DEFAULTS["12"], LIST_13)
    assert problems == ("sm_70 is not known to this toolkit (it knows sm_75 to sm_121)",)
    assert check_known(GpuArchs.of("90a", ptx="100"), LIST_12) == (
        "compute_100 (PTX) is not known to this toolkit (it knows sm_50 to sm_90)",
    )
    assert "listed no GPU architecture" in check_known(GpuArchs.of("80"), "nvcc fatal")[0]


# ---------------------------------------------------------------------- toolkits


DEFAULTS = {c: load_stack("gentoo2023").gpu_archs(c) for c in ("12", "13")}


def test_stack_defaults_are_the_sites():
    assert DEFAULTS["13"] == GpuArchs(("80", "90"), ("90",))
    assert DEFAULTS["12"] == GpuArchs(("70", "80", "90"), ("90",))


def test_toolkit_layer_in_a_cuda_targets_image():
    from builder.providers import spec_for
    from builder.targets.model import resolve

    cpu, cu13, cu13py = (
        spec_for(t)
        for t in resolve(
            [
                "gentoo2023-x86-64-v3",
                "gentoo2023-x86-64-v3-cuda13",
                "gentoo2023-x86-64-v3-cuda13-py313",
            ]
        )
    )
    assert not cpu.layers and [la.name for la in cu13.layers] == ["cuda13"]
    assert [la.name for la in cu13py.layers] == ["python3.13", "cuda13"]  # shared, in order
    env = dict(cu13py.env)
    assert env["PATH"].startswith("/cbuild/cuda/bin:/opt/python/3.13/bin:")
    assert env["NVCC_APPEND_FLAGS"] == "-objtemp" and env["CBUILD_TARGET"].endswith("-cuda13-py313")
    assert with_toolkit(cpu, TOOLKITS["13"]).layers == cu13.layers


def test_toolkits_pin_every_file():
    for tk in TOOLKITS.values():
        files = (*tk.wheels, *tk.debs)
        assert files and all(len(p.sha256) == 64 and p.size > 0 for p in files)
        # each file is fetched on the host from the registry that serves it, checked by sha256
        assert all(p.source.mirrors == (p.folder_url + p.file,) for p in files)
        assert all(p.source.sha256 == p.sha256 for p in files)
        (step,) = install_steps(tk, local_dir="/dl")
        for p in tk.wheels:
            assert f"{p.requirement} --hash=sha256:{p.sha256}" in step
        for p in tk.debs:
            assert p.sha256 in step and f"dpkg-deb -x /dl/{shlex.quote(p.file)}" in step
        assert step.startswith("(set -e; ") and "--no-index --find-links /dl" in step
        assert "ln -s lib /cbuild/cuda/lib64" in step
        assert f"ln -s libcudart.so.{tk.cuda} /cbuild/cuda/lib/libcudart.so" in step
        layer = toolkit_layer(tk)  # the image layer: inputs copied in, installed offline
        assert layer.name == tk.name and {s.file for s in layer.inputs} == {p.file for p in files}
        assert "--no-index --find-links /tmp/cbuild-inputs" in layer.script[0]
        assert all(p.file in layer.script[1] for p in files)  # removed after the install
    assert toolkit("cuda12") is TOOLKITS["12"] and toolkit("13").name == "cuda13"
    with pytest.raises(ConfigError, match="known: cuda13, cuda12"):
        toolkit("cuda11")


def test_cuda12_layout_ties_debian_and_pypi():
    (step,) = install_steps(TOOLKITS["12"], local_dir="/dl")
    assert "nvcc.profile" in step and "nvvm/bin" in step
    assert "nvidia-cuda-toolkit=12.4.131~12.4.1-2" not in step  # offline: no apt
    assert TOOLKITS["12"].debs[0].source.mirrors == (
        "http://deb.debian.org/debian/pool/non-free/n/nvidia-cuda-toolkit/"
        "nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb",
    )
    assert "TOP = $(_HERE_)/.." in tk_mod.NVCC_PROFILE


def test_environments():
    env13, env12 = image_env(TOOLKITS["13"]), image_env(TOOLKITS["12"])
    assert env13["NVCC_APPEND_FLAGS"] == "-objtemp"
    assert env12["NVCC_APPEND_FLAGS"] == "-objtemp -cudart shared -cudadevrt none"
    assert env13["PATH"].startswith("/cbuild/cuda/bin:") and env13["CUDA_HOME"] == "/cbuild/cuda"
    b13 = build_env(TOOLKITS["13"], DEFAULTS["13"])
    assert b13["CUDAARCHS"] == "80-real;90" and b13["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0+PTX"
    assert b13["CMAKE_ARGS"] == "-DCMAKE_CUDA_ARCHITECTURES=80-real;90"
    b12 = build_env(TOOLKITS["12"], DEFAULTS["12"])
    assert b12["TORCH_CUDA_ARCH_LIST"] == "7.0;8.0;9.0+PTX"
    assert "-DCMAKE_CUDA_RUNTIME_LIBRARY=Shared" in b12["CMAKE_ARGS"]
    assert build_env(TOOLKITS["13"], GpuArchs.of("90"))["CUDAARCHS"] == "90-real"
    assert TOOLKITS["13"].as_dict()["files"][TOOLKITS["13"].wheels[0].file] == (
        TOOLKITS["13"].wheels[0].sha256
    )


# ---------------------------------------------------------------------- integration

CACHE = Path(os.environ.get("CBUILD_CUDA_CACHE", "/var/cache/cbuild-cuda"))
KERNEL = """\
extern "C" __global__ void scale(float *x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}
extern "C" int launch_scale(float *x, float a, int n) {
  scale<<<(n + 255) / 256, 256>>>(x, a, n);
  return (int)cudaGetLastError();
}
"""


def _cached(folder: Path, files) -> bool:
    return all(
        (folder / p.file).is_file()
        and hashlib.sha256((folder / p.file).read_bytes()).hexdigest() == p.sha256
        for p in files
    )


@pytest.mark.integration
@pytest.mark.parametrize("cuda", ["13", "12"])
def test_toolkit_compiles_reproducibly_and_scan_matches_cuobjdump(engine, cuda, tmp_path):
    """The toolkit layer's steps in the standalone image (gcc 12): a kernel compiled twice for
    the default architectures is bit-identical, the scan lists what cuobjdump lists, and a
    CPU-only library is caught."""
    from builder.engines.base import Mount, RunSpec
    from builder.pipeline.fetch import host_ca_bundle
    from builder.providers import spec_for
    from builder.targets.model import Target, load_stack

    tk = TOOLKITS[cuda]
    image = engine.build_image(
        spec_for(Target(load_stack("gentoo2023"), "generic")), lambda m: None
    )
    cache = CACHE / tk.name
    if not _cached(cache, (*tk.wheels, *tk.debs, CUOBJDUMP)):
        cache.mkdir(parents=True, exist_ok=True)
        ca = host_ca_bundle()
        fetch = engine.run(
            RunSpec(
                image,
                ["bash", "-c", download_steps(tk, "/dl", extra=(CUOBJDUMP,))[0]],
                mounts=(Mount(cache, "/dl", read_only=False),
                        *((Mount(ca, "/cbuild/ca-bundle.crt"),) if ca else ())),
                env={"PIP_CERT": "/cbuild/ca-bundle.crt"} if ca else {},
                network=True,
            ),
            tmp_path / "fetch.log",
        )  # fmt: skip
        assert fetch.ok, fetch.output[-3000:]
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "k.cu").write_text(KERNEL)
    gencode = " ".join(build_env(tk)["CBUILD_NVCC_GENCODE"].split())
    script = "\n".join(
        [
            "set -e",
            *install_steps(tk, local_dir="/dl"),
            "nvcc --list-gpu-code > /out/list-gpu-code",
            "mkdir -p /tmp/b && cd /tmp/b",
            # as build systems do: compile with -c, then link; the same paths both times
            f"for i in 1 2; do nvcc -c -Xcompiler -fPIC {gencode} -o k.o /src/k.cu;"
            f" nvcc -shared {gencode} -o libk.so k.o; cp libk.so /out/libk.$i.so; done",
            "echo 'int f(int x) { return x + 1; }' > h.c && gcc -shared -fPIC -o /out/cpu.so h.c",
            *cuobjdump_steps("/tmp/co", local_dir="/dl"),
            f"{cuobjdump_path('/tmp/co')} --list-elf --list-ptx /out/libk.1.so > /out/cuobjdump",
        ]
    )
    result = engine.run(
        RunSpec(
            image,
            ["bash", "-c", script],
            mounts=(Mount(cache, "/dl"), Mount(src, "/src"), Mount(out, "/out", read_only=False)),
            env=image_env(tk),
        ),
        tmp_path / "build.log",
    )
    assert result.ok, result.output[-3000:]
    assert check_known(tk.default_archs, (out / "list-gpu-code").read_text()) == ()
    one, two = (out / "libk.1.so").read_bytes(), (out / "libk.2.so").read_bytes()
    assert one == two, "two compiles of the same kernel differ"
    code = scan_device_code(out / "libk.1.so")
    assert code.sass == tuple(f"sm_{a}" for a in tk.default_archs.sass)
    assert code.ptx == tuple(f"compute_{a}" for a in tk.default_archs.ptx)
    assert check_device_code([code], tk.default_archs) == ()
    listed = (out / "cuobjdump").read_text().split()
    assert {w.rsplit(".", 2)[-2] for w in listed if w.endswith(".cubin")} == set(code.sass)
    assert {
        w.rsplit(".", 2)[-2].replace("sm_", "compute_") for w in listed if w.endswith(".ptx")
    } == set(code.ptx)
    cpu = scan_device_code(out / "cpu.so")
    assert not cpu.has_device_code
    assert "fell back to CPU" in check_device_code([cpu], tk.default_archs)[0]
