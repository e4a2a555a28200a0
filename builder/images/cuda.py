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
  runtime.

Every file is locked by sha256; the toolkit is never copied into a wheel. `NVCC_APPEND_FLAGS=
-objtemp` names nvcc's temporaries after the object instead of `tmpxft_<pid>`: objects compiled
with `-c` (as build systems do) are bit-identical; a one-step `nvcc -shared x.cu` of CUDA 12.4
still embeds the pid.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from builder.errors import ConfigError
from builder.images.apptainer import DEFAULT_MIRROR
from builder.images.paths import CUDA_HOME, DEFAULT_PATH
from builder.targets.gpu import GpuArchs

STAGING = "/tmp/cbuild-cuda"  # the layer's scratch folder, removed when it is done


@dataclass(frozen=True)
class Pinned:
    """One downloaded file: what asks for it, the file the registry serves, its sha256."""

    requirement: str  # pip: `name==version`; apt: `package=version`
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Toolkit:
    cuda: str  # the major version: a target's accelerator is `cuda<cuda>`
    version: str  # the toolkit release, e.g. "13.0.2"
    nvcc: str  # nvcc's own version (`nvcc --version`)
    resolved_from: str  # the metapackage requirement the wheels were resolved from
    wheels: tuple[Pinned, ...]
    debs: tuple[Pinned, ...]
    default_archs: GpuArchs  # the site's default; a recipe may override it
    static_cudart: bool  # False: no libcudart_static.a here, CMake links cudart shared
    nvcc_append: tuple[str, ...]  # NVCC_APPEND_FLAGS: after every nvcc command line
    deb_suite: str = ""  # where the debs come from (component non-free)

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
            ),
            Pinned(
                "nvidia-cuda-crt==13.0.88",
                f"nvidia_cuda_crt-13.0.88-py3-none-{_CU13}.whl",
                "2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4",
                134086,
            ),
            Pinned(
                "nvidia-nvvm==13.0.88",
                "nvidia_nvvm-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
                "c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0",
                61601415,
            ),
            Pinned(
                "nvidia-cuda-runtime==13.0.96",
                f"nvidia_cuda_runtime-13.0.96-py3-none-{_CU13}.whl",
                "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
                2243632,
            ),
            Pinned(
                "nvidia-cuda-cccl==13.0.85",
                f"nvidia_cuda_cccl-13.0.85-py3-none-{_CU13}.whl",
                "e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649",
                3120526,
            ),
        ),
        debs=(),
        default_archs=GpuArchs(("80", "90"), ("90",)),
        static_cudart=True,
        nvcc_append=("-objtemp",),
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
            ),
            Pinned(
                "nvidia-cuda-runtime-cu12==12.4.127",
                "nvidia_cuda_runtime_cu12-12.4.127-py3-none-manylinux2014_x86_64.whl",
                "64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5",
                883737,
            ),
            Pinned(
                "nvidia-cuda-cccl-cu12==12.4.127.post1",
                "nvidia_cuda_cccl_cu12-12.4.127.post1-py3-none-manylinux2014_x86_64.whl",
                "2027fa5fc75fbee703bf24e8275a40a605cf94a3e8fef8a7187897d49b34facb",
                3111329,
            ),
        ),
        debs=(
            Pinned(
                "nvidia-cuda-toolkit=12.4.131~12.4.1-2",
                "nvidia-cuda-toolkit_12.4.131~12.4.1-2_amd64.deb",
                "cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319",
                87240108,
            ),
        ),
        default_archs=GpuArchs(("70", "80", "90"), ("90",)),
        static_cudart=False,
        # No libcudart_static.a nor libcudadevrt.a: cudart shared, no device runtime (dynamic
        # parallelism and relocatable device code then fail to link, loudly).
        nvcc_append=("-objtemp", "-cudart", "shared", "-cudadevrt", "none"),
        deb_suite="trixie",
    ),
}

# cuobjdump, to cross-check the device-code scan (builder.wheels.cuda) in tests; 13.x reads the
# fatbins of 12.x and 13.x.
CUOBJDUMP = Pinned(
    "nvidia-cuda-cuobjdump==13.5.37",
    f"nvidia_cuda_cuobjdump-13.5.37-py3-none-{_CU13}.whl",
    "38780fee50863252a0b8926357faa91615ca1c8346490563f33a06100cd73f58",
    290354,
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


def _printf(path: str, text: str) -> str:
    """A command that writes `text` to `path`: one line, so it fits a RUN and a %post alike."""
    lines = text.splitlines()
    return f"printf '%s\\n' {' '.join(shlex.quote(x) for x in lines)} > {path}"


def _one_shell(cmds: list[str]) -> str:
    """One line that fails as a whole: a RUN, and an Apptainer %post (`set -e` there does not
    stop inside an `&&` chain), stop at the first failing command."""
    return "(set -e; " + "; ".join(cmds) + ")"


def _pip(files: tuple[Pinned, ...], verb: str, where: str, local_dir: str | None) -> list[str]:
    """pip `download`/`install` of pinned wheels: no dependencies resolved, every file checked
    against its sha256; from `local_dir` (offline) or the index."""
    reqs = "\n".join(f"{p.requirement} --hash=sha256:{p.sha256}" for p in files)
    pip = [
        f"python3 -m pip {verb} --no-deps --only-binary=:all: --require-hashes --no-cache-dir",
        "--disable-pip-version-check",
        *(["--no-compile"] if verb == "install" else []),
        *([f"--no-index --find-links {local_dir}"] if local_dir else []),
        f"{'--target' if verb == 'install' else '--dest'} {where}",
        f"-r {STAGING}/requirements.txt",
    ]
    return [_printf(f"{STAGING}/requirements.txt", reqs), " ".join(pip)]


def _apt_download(debs: tuple[Pinned, ...], suite: str, dest: str) -> list[str]:
    """The pinned .debs by apt (signed lists of `suite`'s non-free), from a private state
    folder: the image's own sources and lists stay as they are."""
    state = f"{STAGING}/apt"
    opts = (
        f"-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts={state}/sources"
        f" -o Dir::State::Lists={state}/lists -o Dir::Cache={state}/cache"
        " -o APT::Sandbox::User=root"
    )
    source = (
        f"Types: deb\nURIs: {DEFAULT_MIRROR}\nSuites: {suite}\nComponents: non-free\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    )
    return [
        f"mkdir -p {state}/sources {state}/lists/partial {state}/cache/archives/partial",
        _printf(f"{state}/sources/cbuild-cuda.sources", source),
        f"apt-get {opts} update -qq",
        f"cd {dest}",
        f"apt-get {opts} download -qq {' '.join(shlex.quote(p.requirement) for p in debs)}",
        "cd /",
    ]


def _check(files: tuple[Pinned, ...], folder: str) -> list[str]:
    sums = "\n".join(f"{p.sha256}  {p.file}" for p in files)
    return [
        _printf(f"{STAGING}/files.sha256", sums),
        f"cd {folder}",
        f"sha256sum --quiet --strict -c {STAGING}/files.sha256",
        "cd /",
    ]


def download_steps(tk: Toolkit, dest: str, extra: tuple[Pinned, ...] = ()) -> tuple[str, ...]:
    """Network on: every pinned file of `tk` (and `extra` wheels, such as CUOBJDUMP) into
    `dest` (a cache folder bound in), each checked against its sha256.
    `install_steps(tk, local_dir=dest)` then needs no network."""
    cmds = [f"rm -rf {STAGING}", f"mkdir -p {STAGING} {dest}"]
    cmds += _pip((*tk.wheels, *extra), "download", dest, None)
    if tk.debs:
        cmds += _apt_download(tk.debs, tk.deb_suite, dest)
    cmds += [*_check((*tk.wheels, *extra, *tk.debs), dest), f"rm -rf {STAGING}"]
    return (_one_shell(cmds),)


def install_steps(
    tk: Toolkit, home: str = CUDA_HOME, local_dir: str | None = None
) -> tuple[str, ...]:
    """The image layer that installs `tk` at `home`: one shell command (one RUN, one layer).
    `local_dir`: a folder holding the pinned files (`download_steps`); else the network."""
    site, deb, dl = f"{STAGING}/site", f"{STAGING}/deb", f"{STAGING}/dl"
    cmds = [f"rm -rf {STAGING} {home}", f"mkdir -p {STAGING} {home} {dl}"]
    cmds += _pip(tk.wheels, "install", site, local_dir)
    if tk.cuda == "13":
        cmds += [f"cp -a {site}/nvidia/cu13/. {home}/"]
    else:
        if local_dir:
            cmds += [f"cp {local_dir}/{shlex.quote(p.file)} {dl}/" for p in tk.debs]
        else:
            cmds += _apt_download(tk.debs, tk.deb_suite, dl)
        cmds += _check(tk.debs, dl)
        cmds += [f"dpkg-deb -x {dl}/{shlex.quote(p.file)} {deb}" for p in tk.debs]
        tools = " ".join(f"{deb}/usr/bin/{shlex.quote(t)}" for t in _DEB_TOOLS)
        # PyPI's packages share one layout (bin/ include/ lib/ nvvm/): merged, they are the
        # headers, cudart, ptxas, libnvvm and libdevice; Debian's adds the compiler drivers.
        cmds += [
            f"for p in cuda_nvcc cuda_runtime cuda_cccl; do cp -a {site}/nvidia/$p/. {home}/; done",
            f"mkdir -p {home}/bin {home}/nvvm/bin",
            f"cp -a {deb}/{_DEB_BIN}/nvcc {deb}/{_DEB_BIN}/crt {tools} {home}/bin/",
            f"cp -a {deb}/{_DEB_BIN}/cicc {home}/nvvm/bin/",
            _printf(f"{home}/bin/nvcc.profile", NVCC_PROFILE),
        ]
    cmds += [
        f"find {home} -name __init__.py -delete",
        f"ln -s libcudart.so.{tk.cuda} {home}/lib/libcudart.so",
        f"ln -s lib {home}/lib64",
        f"rm -rf {STAGING}",
        f"{home}/bin/nvcc --version",
    ]
    return (_one_shell(cmds),)


def image_env(tk: Toolkit, home: str = CUDA_HOME) -> dict[str, str]:
    """The image's environment: where the toolkit is, and reproducible nvcc output."""
    return {
        "CUDA_HOME": home,
        "CUDA_PATH": home,
        "CUDACXX": f"{home}/bin/nvcc",
        "PATH": f"{home}/bin:{DEFAULT_PATH}",
        "NVCC_APPEND_FLAGS": " ".join(tk.nvcc_append),
        "CBUILD_CUDA": tk.version,
    }


def build_env(tk: Toolkit, archs: GpuArchs | None = None) -> dict[str, str]:
    """A build's environment: the GPU architectures in every build system's convention.
    CMAKE_ARGS is read by scikit-build-core and scikit-build; CUDAARCHS by CMake itself;
    TORCH_CUDA_ARCH_LIST by torch's extensions; CBUILD_NVCC_GENCODE is for a recipe's own
    nvcc command lines."""
    archs = archs or tk.default_archs
    cmake_args = [f"-DCMAKE_CUDA_ARCHITECTURES={archs.cmake()}"]
    if not tk.static_cudart:
        cmake_args.append("-DCMAKE_CUDA_RUNTIME_LIBRARY=Shared")
    return {
        "CUDAARCHS": archs.cmake(),
        "CMAKE_ARGS": " ".join(cmake_args),
        "TORCH_CUDA_ARCH_LIST": archs.torch(),
        "CBUILD_CUDA_ARCHITECTURES": archs.cmake(),
        "CBUILD_NVCC_GENCODE": " ".join(archs.gencode()),
    }


def cuobjdump_steps(dest: str, local_dir: str | None = None) -> tuple[str, ...]:
    """The pinned cuobjdump at `dest` (`cuobjdump_path(dest)`), to cross-check a device-code
    scan; not part of any toolkit layer."""
    cmds = [f"rm -rf {STAGING}", f"mkdir -p {STAGING}"]
    cmds += [*_pip((CUOBJDUMP,), "install", dest, local_dir), f"rm -rf {STAGING}"]
    return (_one_shell(cmds),)


def cuobjdump_path(dest: str) -> str:
    return f"{dest}/nvidia/cu13/bin/cuobjdump"
