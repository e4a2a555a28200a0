"""The in-container layout shared by every step, engine and workflow: fixed paths make builds
reproducible, so each is spelled here and nowhere else."""

SRC_DIR = "/cbuild/src"  # the sdist, unpacked
DEPS_DIR = "/cbuild/deps"  # the locked build requirements, as wheels
OUT_DIR = "/cbuild/out"  # where the build writes its wheel
BUILD_ENV = "/cbuild/buildenv"  # the build's venv
TEST_ENV = "/cbuild/testenv"  # the test's venv
RUN_ENV = "/cbuild/runenv"  # `cbuild run/shell`'s venv
IN_DIR = "/cbuild/in"  # read-only inputs: sdist, wheels under test
RT_DEPS_DIR = "/cbuild/rtdeps"  # runtime and test dependencies, as wheels
SHIM_DIR = "/cbuild/shim"  # launchers that put a program under QEMU
PATCHES_DIR = "/cbuild/patches"  # a recipe's patches, read-only
QEMU_PATH = "/cbuild/qemu/qemu-x86_64"  # the host's static qemu-user, bound in
DOWNLOAD_DIR = "/cbuild/dl"  # a fetch step's output folder
STORE_DIR = "/cbuild/store"  # the cache's wheel store, read-only
LINKS_DIR = "/cbuild/links"  # extra wheel folders (/0, /1, ...), in search order
WHEELHOUSE_DIR = "/cbuild/wheelhouse"  # /<i>: a wheelhouse's folders, in a node's search order
WITH_DIR = "/cbuild/with"  # /<i>: folders of wheel files given by path
FETCHED_DIR = "/cbuild/fetched"  # a run's own downloads
CA_PATH = "/cbuild/ca-bundle.crt"  # the host's trust store, for networked steps
TOOLS_DIR = "/cbuild/tools"  # the fetch step's own tools (pypa/build), as wheels
TOOLS_ENV = "/cbuild/toolsenv"  # the fetch step's venv of them
CCACHE_DIR = "/cbuild/ccache"
LOG_PATH = "/cbuild/run.log"  # a Docker run's log file, bound in
INPUTS_DIR = "/tmp/cbuild-inputs"  # an image layer's input files, during its build only
# Apptainer's %post gets a /tmp of its own, hiding what %files put there: its files land here
# and %post moves them to INPUTS_DIR first.
APPTAINER_INPUTS_DIR = "/cbuild-inputs"
PYTHON_PREFIX = "/opt/python/{python}"  # a Python built from source, in an image layer
CUDA_HOME = "/cbuild/cuda"  # a CUDA target's toolkit, CUDA_HOME-shaped, in an image layer
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
