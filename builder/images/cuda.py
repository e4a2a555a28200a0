"""CUDA toolkits for the image of a CUDA target: pinned inputs as data, and pure functions that
render the shell of the image layer installing one at CUDA_HOME, its environment, and the build
environment that hands a target's GPU architectures to every build system.

- CUDA 13: PyPI's `cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.2` resolves to wheels that
  together lay out one CUDA_HOME (`nvidia/cu13/`). CMake's FindCUDAToolkit also wants
  `lib/libcudart.so` and `lib64`. Pinned wheel by wheel: `nvidia-cuda-nvcc` alone pulls a
  mismatched nvvm/crt.
- CUDA 12: PyPI's cu12 wheels carry no `nvcc`. Debian trixie's non-free `nvidia-cuda-toolkit`
  (12.4.131) brings nvcc, cicc and the other drivers, unpacked with `dpkg-deb -x` (installing it
  would pull trixie's glibc, above the stack's floor; its binaries need GLIBC_2.7); PyPI's
  `cuda-toolkit[nvcc,cudart,cccl]==12.4.1` brings headers, cudart and libdevice; an
  `nvcc.profile` ties them. It has no `libcudart_static.a` (Debian ships it only in the 934 MB
  nvidia-cuda-dev) nor `libcudadevrt.a`: CUDA 12 code links cudart shared, without the device
  runtime (an empty `libcudadevrt.a` satisfies the `-lcudadevrt` CMake always adds).

Every file is locked by sha256 and fetched on the host (PyPI's file, Debian's pool), like the
CPython tarball (builder.images.python): an image build behind a TLS-inspecting proxy has no
trust store, and one checked copy in the cache serves every later build offline. The toolkit
is an image layer of its own and is never copied into a wheel. `NVCC_APPEND_FLAGS=
-objtemp` names nvcc's temporaries after the object instead of `tmpxft_<pid>`: objects compiled
with `-c` (as build systems do) are bit-identical; a one-step `nvcc -shared x.cu` of CUDA 12.4
still embeds the pid.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from builder.errors import ConfigError
from builder.images.apptainer import DEFAULT_MIRROR
from builder.images.paths import CUDA_HOME, DEFAULT_PATH, INPUTS_DIR
from builder.images.spec import ImageSpec, Layer, SourceFile
from builder.targets.gpu import GpuArchs

STAGING = "/tmp/cbuild-cuda"  # the layer's scratch folder, removed when it is done


# nvcc names its temporaries after the object, not `tmpxft_<pid>`: objects bit-identical.
REPRODUCIBLE_NVCC = ("-objtemp",)


@dataclass(frozen=True)
class Pinned:
    """One downloaded file: what asks for it, the file the registry serves, its sha256."""

    requirement: str  # pip: `name==version`; apt: `package=version`
    file: str
    sha256: str
    size: int
    folder_url: str  # the registry's folder serving `file` (PyPI's, Debian's pool)

    @property
    def source(self) -> SourceFile:
        """The file as an image layer's input: found or fetched on the host, by sha256."""
        return SourceFile(self.file, self.sha256, (self.folder_url + self.file,))


@dataclass(frozen=True)
class Toolkit:
    cuda: str  # the major version: a target's accelerator is `cuda<cuda>`
    version: str  # the toolkit release, e.g. "13.0.2"
    nvcc: str  # nvcc's own version (`nvcc --version`)
    resolved_from: str  # the metapackage requirement the wheels were resolved from
    wheels: tuple[Pinned, ...]
    debs: tuple[Pinned, ...]
    static_cudart: bool  # False: no libcudart_static.a here, CMake links cudart shared
    nvcc_append: tuple[str, ...]  # NVCC_APPEND_FLAGS: after every nvcc command line

    @property
    def name(self) -> str:
        return f"cuda{self.cuda}"

    def as_dict(self) -> dict[str, object]:
        """What a manifest records of the toolkit."""
        return {
            "cuda": self.version,
            "nvcc": self.nvcc,
            "resolved_from": self.resolved_from,
            "files": {p.file: p.sha256 for p in (*self.wheels, *self.debs)},
        }


_CU13 = "manylinux2014_x86_64.manylinux_2_17_x86_64"
_PYPI = "https://files.pythonhosted.org/packages/"
TOOLKITS: dict[str, Toolkit] = {
    "13": Toolkit(
        cuda="13",
        version="13.0.2",
        nvcc="13.0.88",
        resolved_from="cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.2",
        wheels=(
            Pinned(
                "nvidia-cuda-nvcc==13.0.88",
                f"nvidia_cuda_nvcc-13.0.88-py3-none-{_CU13}.whl",
                "56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03",
                37384532,
                _PYPI + "71/8b/a546c12881fffeba927d810598987df25d74b8b241788c7db8dfc93b0173/",
            ),
            Pinned(
                "nvidia-cuda-crt==13.0.88",
                f"nvidia_cuda_crt-13.0.88-py3-none-{_CU13}.whl",
                "2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4",
                134086,
                _PYPI + "05/69/a1ec4d9f0747d85964206feb47bf359f48a2d6af74c0add8abba6efe3dda/",
            ),
            Pinned(
                "nvidia-nvvm==13.0.88",
                "nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
                "c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0",
                61601415,
                _PYPI + "15/b0/ee41e6d1108d959b5097163e7190c2d0f7857dea75606ce358f0275891b4/",
            ),
            Pinned(
                "nvidia-cuda-runtime==13.0.96",
                f"nvidia_cuda_runtime-13.0.96-py3-none-{_CU13}.whl",
                "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
                2243632,
                _PYPI + "2e/24/d1558f3b68b1d26e706813b1d10aa1d785e4698c425af8db8edc3dced472/",
            ),
            Pinned(
                "nvidia-cuda-cccl==13.0.85",
                f"nvidia_cuda_cccl-13.0.85-py3-none-{_CU13}.whl",
                "e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649",
                3120526,
                _PYPI + "ab/fb/0384bb2129bed6b1b39f8e44471c615ab5ab29b7e55817538a1d390d8f84/",
            ),
        ),
        debs=(),
        static_cudart=True,
        nvcc_append=REPRODUCIBLE_NVCC,
    ),
    "12": Toolkit(
        cuda="12",
        version="12.4.1",
        nvcc="12.4.131",
        resolved_from="cuda-toolkit[nvcc,cudart,cccl]==12.4.1",
        wheels=(
            Pinned(
                "nvidia-cuda-nvcc-cu12==12.4.131",
                "nvidia_cuda_nvcc_cu12-12.4.131-py3-none-manylinux2014_x86_64.whl",
                "e4c9a35435c3b0e36c6397c5696334c9ea6650e524736cbd1c5d345ea099bb04",
                22265199,
                _PYPI + "54/5c/c2f2592f3a5a041d546501cdcfab0f19ccbd31714de238f381a6e302a783/",
            ),
            Pinned(
                "nvidia-cuda-runtime-cu12==12.4.127",
                "nvidia_cuda_runtime_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl",
                "64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5",
                883737,
                _PYPI + "ea/27/1795d86fe88ef397885f2e580ac37628ed058a92ed2c39dc8eac3adf0619/",
            ),
            Pinned(
                "nvidia-cuda-cccl-cu12==12.4.127.post1",
                "nvidia_cuda_cccl_cu12-12.4.127.post1-py3-none-manylinux2014_x86_64.whl",
                "2027fa5fc75fbee703bf24e8275a40a605cf94a3e8fef8a7187897d49b34facb",
                3111329,
                _PYPI + "7f/62/6da9278c0d06e9ed48520d0ac23e300cc209f8cb4fdc854ef2e133cc2aa0/",
            ),
        ),
        debs=(
            Pinned(
                "nvidia-cuda-toolkit=12.4.131~12.4.1-2",
                "nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb",
                "cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319",
                87240108,
                f"{DEFAULT_MIRROR}/pool/non-free/n/nvidia-cuda-toolkit/",
            ),
        ),
        static_cudart=False,
        # No libcudart_static.a nor libcudadevrt.a: cudart shared, no device runtime (dynamic
        # parallelism and relocatable device code then fail to link, loudly).
        nvcc_append=(*REPRODUCIBLE_NVCC, "-cudart", "shared", "-cudadevrt", "none"),
    ),
}

# cuobjdump, to cross-check the device-code scan (builder.wheels.cuda) in tests; 13.x reads the
# fatbins of 12.x and 13.x.
CUOBJDUMP = Pinned(
    "nvidia-cuda-cuobjdump==13.5.37",
    f"nvidia_cuda_cuobjdump-13.5.37-py3-none-{_CU13}.whl",
    "38780fee50863252a0b8926357faa91615ca1c8346490563f33a06100cd73f58",
    290354,
    _PYPI + "07/70/2cea1817edfd186883b357cffa78dd47757ba33e4eef3bd0141a4f4b4109/",
)

# The CUDA 12 drivers the Debian package brings, and where in it they are.
_DEB_BIN = "usr/lib/nvidia-cuda-toolkit/bin"
_DEB_TOOLS = (
    "ptxas",
    "fatbinary",
    "nvlink",
    "cudafe++",
    "bin2c",
    "nvprune",
    "cuobjdump",
    "cu++filt",
)
# nvcc's own configuration, in the layout of NVIDIA's installers (bin/, nvvm/, include/, lib/).
NVCC_PROFILE = """\
TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib:
PATH += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib/stubs" "-L$(TOP)/lib"
CUDAFE_FLAGS +=
PTXAS_FLAGS +=
"""


def toolkit(cuda: str) -> Toolkit:
    """The toolkit of `cuda12`/`cuda13` (or "12"/"13")."""
    key = cuda.removeprefix("cuda")
    if key not in TOOLKITS:
        raise ConfigError(
            f"no CUDA toolkit {cuda!r}",
            fix=f"known: {', '.join(t.name for t in TOOLKITS.values())}",
        )
    return TOOLKITS[key]


def toolkit_files(cuda: str) -> tuple[Pinned, ...]:
    """Every pinned file of the toolkit of `cuda`."""
    tk = toolkit(cuda)
    return (*tk.wheels, *tk.debs)


def _printf(path: str, text: str) -> str:
    """A command that writes `text` to `path`: one line, so it fits a RUN and a %post alike."""
    lines = text.splitlines()
    return f"printf '%s\\n' {' '.join(shlex.quote(x) for x in lines)} > {path}"


def _one_shell(cmds: list[str]) -> str:
    """One line that fails as a whole: a RUN, and an Apptainer %post (`set -e` there does not
    stop inside an `&&` chain), stop at the first failing command."""
    return "(set -e; " + "; ".join(cmds) + ")"


def _pip_install(files: tuple[Pinned, ...], where: str, local_dir: str) -> list[str]:
    """pip install of pinned wheels from `local_dir`, offline: no dependencies resolved,
    every file checked against its sha256."""
    reqs = "\n".join(f"{p.requirement} --hash=sha256:{p.sha256}" for p in files)
    pip = (
        "python3 -m pip install --no-deps --only-binary=:all: --require-hashes --no-cache-dir"
        f" --disable-pip-version-check --no-compile --no-index --find-links {local_dir}"
        f" --target {where} -r {STAGING}/requirements.txt"
    )
    return [_printf(f"{STAGING}/requirements.txt", reqs), pip]


def _check(files: tuple[Pinned, ...], folder: str) -> list[str]:
    sums = "\n".join(f"{p.sha256}  {p.file}" for p in files)
    return [
        _printf(f"{STAGING}/files.sha256", sums),
        f"cd {folder}",
        f"sha256sum --quiet --strict -c {STAGING}/files.sha256",
        "cd /",
    ]


def install_steps(
    tk: Toolkit, home: str = CUDA_HOME, local_dir: str = INPUTS_DIR
) -> tuple[str, ...]:
    """The shell that installs `tk` at `home` from its pinned files in `local_dir` (no
    network): one command, so one RUN, one layer."""
    site, deb = f"{STAGING}/site", f"{STAGING}/deb"
    cmds = [f"rm -rf {STAGING} {home}", f"mkdir -p {STAGING} {home}"]
    cmds += _pip_install(tk.wheels, site, local_dir)
    if tk.cuda == "13":
        cmds += [f"cp -a {site}/nvidia/cu13/. {home}/"]
    else:
        cmds += _check(tk.debs, local_dir)
        cmds += [f"dpkg-deb -x {local_dir}/{shlex.quote(p.file)} {deb}" for p in tk.debs]
        tools = " ".join(f"{deb}/usr/bin/{shlex.quote(t)}" for t in _DEB_TOOLS)
        # PyPI's packages share one layout (bin/ include/ lib/ nvvm/): merged, they are the
        # headers, cudart, ptxas, libnvvm and libdevice; Debian's adds the compiler drivers.
        cmds += [
            f"for p in cuda_nvcc cuda_runtime cuda_cccl; do cp -a {site}/nvidia/$p/. {home}/; done",
            f"mkdir -p {home}/bin {home}/nvvm/bin",
            f"cp -a {deb}/{_DEB_BIN}/nvcc {deb}/{_DEB_BIN}/crt {tools} {home}/bin/",
            f"cp -a {deb}/{_DEB_BIN}/cicc {home}/nvvm/bin/",
            _printf(f"{home}/bin/nvcc.profile", NVCC_PROFILE),
            # CMake links CUDA code with `-lcudadevrt -lcudart` whatever the runtime; an empty
            # archive stands in for the device runtime this toolkit lacks: code that needs it
            # (relocatable device code, dynamic parallelism) still fails to link, loudly.
            f"printf '!<arch>\\n' > {home}/lib/libcudadevrt.a",
        ]
    cmds += [
        f"find {home} -name __init__.py -delete",
        f"ln -s libcudart.so.{tk.cuda} {home}/lib/libcudart.so",
        f"ln -s lib {home}/lib64",
        f"rm -rf {STAGING}",
        f"{home}/bin/nvcc --version",
    ]
    return (_one_shell(cmds),)


def toolkit_layer(tk: Toolkit) -> Layer:
    """The image layer of `tk`: its pinned files copied in (found or fetched on the host,
    builder.images.python.ensure), installed offline, then removed. It depends on the base and
    the packages only, so every level and target of the same CUDA shares it."""
    files = toolkit_files(tk.cuda)
    rm = f"rm -f {' '.join(f'{INPUTS_DIR}/{shlex.quote(p.file)}' for p in files)}"
    return Layer(tk.name, (*install_steps(tk), rm), tuple(p.source for p in files))


def with_toolkit(spec: ImageSpec, tk: Toolkit) -> ImageSpec:
    """`spec` with `tk` at CUDA_HOME: its layer after the others (a Python built from source
    first) and the toolkit's environment."""
    env = dict(spec.env)
    env |= image_env(tk, path=env.get("PATH", DEFAULT_PATH))
    return replace(spec, layers=(*spec.layers, toolkit_layer(tk)), env=tuple(sorted(env.items())))


def image_env(tk: Toolkit, home: str = CUDA_HOME, path: str = DEFAULT_PATH) -> dict[str, str]:
    """The image's environment: where the toolkit is, and reproducible nvcc output."""
    return {
        "CUDA_HOME": home,
        "CUDA_PATH": home,
        "CUDACXX": f"{home}/bin/nvcc",
        "PATH": f"{home}/bin:{path}",
        "NVCC_APPEND_FLAGS": " ".join(tk.nvcc_append),
        "CBUILD_CUDA": tk.version,
    }


def build_env(tk: Toolkit, archs: GpuArchs) -> dict[str, str]:
    """A build's environment: the GPU architectures in every build system's convention.
    CMAKE_ARGS is read by scikit-build-core and scikit-build; CUDAARCHS by CMake itself;
    TORCH_CUDA_ARCH_LIST by torch's extensions; CBUILD_NVCC_GENCODE is for a recipe's own
    nvcc command lines. LIBRARY_PATH lets a module that CMake links with the C++ linker
    (cuvec's SWIG one) find `-lcudart`/`-lcudadevrt` as the stack's cuda module lets it."""
    cmake_args = [f"-DCMAKE_CUDA_ARCHITECTURES={archs.cmake()}"]
    if not tk.static_cudart:
        cmake_args.append("-DCMAKE_CUDA_RUNTIME_LIBRARY=Shared")
    return {
        "CUDAARCHS": archs.cmake(),
        "CMAKE_ARGS": " ".join(cmake_args),
        "TORCH_CUDA_ARCH_LIST": archs.torch(),
        "CBUILD_CUDA_ARCHITECTURES": archs.cmake(),
        "CBUILD_NVCC_GENCODE": " ".join(archs.gencode()),
        "LIBRARY_PATH": f"{CUDA_HOME}/lib",
    }


def cuobjdump_steps(dest: str, local_dir: str) -> tuple[str, ...]:
    """The pinned cuobjdump at `dest` (`cuobjdump_path(dest)`), to cross-check a device-code
    scan; not part of any toolkit layer."""
    cmds = [f"rm -rf {STAGING}", f"mkdir -p {STAGING}"]
    cmds += [*_pip_install((CUOBJDUMP,), dest, local_dir), f"rm -rf {STAGING}"]
    return (_one_shell(cmds),)


def cuobjdump_path(dest: str) -> str:
    return f"{dest}/nvidia/cu13/bin/cuobjdump"
