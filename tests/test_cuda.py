"""CUDA groundwork: GPU architectures (targets.gpu), the toolkits' image layer (images.cuda) and
the device-code scan (wheels.cuda). The integration test installs both toolkits in the standalone
image, compiles a kernel twice, and checks the scan against cuobjdump."""

from __future__ import annotations

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


@pytest.mark.integration
@pytest.mark.parametrize("cuda", ["13", "12"])
def test_toolkit_compiles_reproducibly_and_scan_matches_cuobjdump(
    engine, cuda, tmp_path, monkeypatch
):
    """The toolkit's image layer in a CUDA target's standalone image (gcc 12), its pinned files
    found where earlier runs left them or fetched on the host: a kernel compiled twice for the
    default architectures is bit-identical, the scan lists what cuobjdump lists, and a CPU-only
    library is caught."""
    from builder.engines.base import Mount, RunSpec
    from builder.images.python import SOURCES_ENV, ensure
    from builder.providers import spec_for
    from builder.targets.model import resolve

    tk = TOOLKITS[cuda]
    sources = CACHE / "sources"  # tests/test_cuda_integration.py gathers the same folder
    sources.mkdir(parents=True, exist_ok=True)
    for p in (*tk.wheels, *tk.debs, CUOBJDUMP):
        if not (sources / p.file).is_file() and (old := next(CACHE.glob(f"*/{p.file}"), None)):
            shutil.copyfile(old, sources / p.file)
    monkeypatch.setenv(SOURCES_ENV, str(sources))
    (target,) = resolve([f"gentoo2023-x86-64-v3-cuda{cuda}"])
    image = engine.build_image(spec_for(target), lambda m: None)
    cache = ensure(CUOBJDUMP.source).parent  # the cross-check's own tool, by sha256
    archs = target.stack.gpu_archs(cuda)
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "k.cu").write_text(KERNEL)
    gencode = " ".join(build_env(tk, archs)["CBUILD_NVCC_GENCODE"].split())
    script = "\n".join(
        [
            "set -e",
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
        ),
        tmp_path / "build.log",
    )
    assert result.ok, result.output[-3000:]
    assert check_known(archs, (out / "list-gpu-code").read_text()) == ()
    one, two = (out / "libk.1.so").read_bytes(), (out / "libk.2.so").read_bytes()
    assert one == two, "two compiles of the same kernel differ"
    code = scan_device_code(out / "libk.1.so")
    assert code.sass == tuple(f"sm_{a}" for a in archs.sass)
    assert code.ptx == tuple(f"compute_{a}" for a in archs.ptx)
    assert check_device_code([code], archs) == ()
    listed = (out / "cuobjdump").read_text().split()
    assert {w.rsplit(".", 2)[-2] for w in listed if w.endswith(".cubin")} == set(code.sass)
    assert {
        w.rsplit(".", 2)[-2].replace("sm_", "compute_") for w in listed if w.endswith(".ptx")
    } == set(code.ptx)
    cpu = scan_device_code(out / "cpu.so")
    assert not cpu.has_device_code
    assert "fell back to CPU" in check_device_code([cpu], archs)[0]


# ---------------------------------------------------------------------- targets, recipes, placement


def test_cuda_targets_from_the_stacks_data():
    from builder.targets.model import all_targets, github_matrix, resolve

    every = all_targets(accelerators=None)
    cuda = [t.id for t in every if t.cuda]
    assert cuda == [
        "gentoo2023-x86-64-v3-cuda12",
        "gentoo2023-x86-64-v3-cuda13",
        "gentoo2023-x86-64-v3-cuda12-py312",
        "gentoo2023-x86-64-v3-cuda13-py312",
        "gentoo2023-x86-64-v3-cuda12-py313",
        "gentoo2023-x86-64-v3-cuda13-py313",
    ]
    assert not any(t.cuda for t in all_targets())  # the CPU targets, as callers had them
    (t,) = resolve(["gentoo2023-x86-64-v3-cuda12"])
    assert t.cuda == "12" and t.folder == "gentoo2023/x86-64-v3" and t.cpu_level.name == "x86-64-v3"
    assert t.as_dict()["gpu_archs"] == "70-real;80-real;90"
    assert "gpu_archs" not in resolve(["gentoo2023-x86-64-v3"])[0].as_dict()
    rows = github_matrix(every)["include"]
    assert {r["accelerator"] for r in rows} == {"cpu", "cuda12", "cuda13"}


def test_recipe_cuda_keys(tmp_path):
    from builder.pipeline.cuda import build_env as job_build_env
    from builder.pipeline.cuda import promised
    from builder.recipes import load_recipe
    from builder.targets.model import resolve

    (tmp_path / "p.toml").write_text(
        '[package]\nname = "p"\naccelerators = ["cpu", "cuda13"]\n'
        '[accelerators.cuda13.build]\ncuda_archs = "90"\n'
    )
    recipe = load_recipe("p", "1.0", tmp_path)
    cpu, cu13, cu12 = resolve(
        ["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v3-cuda13", "gentoo2023-x86-64-v3-cuda12"]
    )
    assert recipe.builds_for_accelerator("cuda13") and not recipe.builds_for_accelerator("cuda12")
    assert promised(recipe, cpu) is None and job_build_env(recipe, cpu) == {}
    assert promised(recipe, cu13) == GpuArchs(("90",), ("90",))  # the recipe's
    assert promised(recipe, cu12) == DEFAULTS["12"]  # the stack's
    assert job_build_env(recipe, cu13)["CMAKE_ARGS"] == "-DCMAKE_CUDA_ARCHITECTURES=90"
    for bad, says in (
        ('accelerators = ["rocm"]', "is not cpu or cudaNN"),
        ('[build]\ncuda_archs = "native"', "depends on the build machine"),
    ):
        (tmp_path / "q.toml").write_text(f'[package]\nname = "q"\n{bad}\n')
        with pytest.raises(ConfigError, match=says):
            load_recipe("q", "1.0", tmp_path)


def test_variants_sharing_a_file_name_are_refused_and_placed_apart(tmp_path):
    from builder.wheelhouse.placement import Candidate, plan

    stack = load_stack("gentoo2023")
    whl = tmp_path / "p-1.0+computecanada-cp311-cp311-linux_x86_64.whl"
    whl.write_bytes(b"")
    cpu = Candidate("gentoo2023-x86-64-v3", "x86-64-v3", whl, "a" * 64, False)
    gpu = Candidate("gentoo2023-x86-64-v3-cuda12", "x86-64-v3", whl, "b" * 64, False, None, None,
                    "cuda12")  # fmt: skip
    a, b = plan([cpu, gpu], stack, {})
    assert a.error and a.error == b.error
    assert "variants must differ in file name" in a.error and "local_tags" in a.error
    tagged = tmp_path / "p-1.0+cuda12.computecanada-cp311-cp311-linux_x86_64.whl"
    tagged.write_bytes(b"")
    generic = Candidate("gentoo2023-generic", "generic", whl, "a" * 64, False)
    gpu = Candidate("gentoo2023-x86-64-v3-cuda12", "x86-64-v3", tagged, "b" * 64, False,
                    accelerator="cuda12")  # fmt: skip
    g, c = plan([generic, gpu], stack, {})
    # the CUDA variant neither makes the CPU package level-dependent nor stands in for it
    assert (g.folder, c.folder) == ("gentoo2023/generic", "gentoo2023/x86-64-v3"), (g, c)


def test_inspect_shows_each_elf_files_gpu_code(so_with_fatbin, tmp_path):
    from builder.wheels.info import inspect_wheel

    wheel = tmp_path / "k-1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(so_with_fatbin, "k/libk.so")
        zf.write("/bin/true", "k/true")
    report = inspect_wheel(wheel)
    text = report.text()
    assert "GPU code: sm_80, sm_90, sm_90a + PTX compute_90" in text
    assert "GPU code: none (host code only)" in text
    assert report.as_dict()["device_code"][0]["sass"] == ("sm_80", "sm_90", "sm_90a")
