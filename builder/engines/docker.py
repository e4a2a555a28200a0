"""The Docker Engine API through the `docker` SDK: works against Docker and Podman's service."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from requests.exceptions import ConnectionError as RequestsConnectionError

from builder.engines.base import Progress, RunResult, RunSpec
from builder.errors import EngineError
from builder.images.paths import LOG_PATH
from builder.images.python import ensure
from builder.images.spec import BASE_ARG, BaseImage, ImageSpec, render_containerfile

RUN_LABEL = "org.cbuild.run"

NO_ENGINE_FIX = """install and start one:
    Podman:  apt-get install podman runc && CONTAINERS_CONF=$PWD/ci/containers.conf \\
             podman system service --time=0 unix:///run/podman/podman.sock &
    Docker:  install Docker Engine and start it (systemctl start docker)
  or point DOCKER_HOST at a running engine's socket (see README, "Engines")."""


def candidate_sockets() -> list[str]:
    """DOCKER_HOST first, then the usual Docker and Podman (rootful, rootless) sockets."""
    out = []
    if os.environ.get("DOCKER_HOST"):
        out.append(os.environ["DOCKER_HOST"])
    out.append("unix:///var/run/docker.sock")
    out.append("unix:///run/podman/podman.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    out.append(f"unix://{runtime}/podman/podman.sock")
    out.append(f"unix://{runtime}/docker.sock")
    return list(dict.fromkeys(out))


def connect(sockets: list[str] | None = None, timeout: int = 3600) -> docker.DockerClient:
    tried = []
    for url in sockets if sockets is not None else candidate_sockets():
        path = url.removeprefix("unix://")
        if url.startswith("unix://") and not Path(path).exists():
            tried.append(f"{url} (no such socket)")
            continue
        try:
            client = docker.DockerClient(base_url=url, timeout=timeout)
            client.ping()
            return client
        except (docker.errors.DockerException, RequestsConnectionError, OSError) as exc:
            tried.append(f"{url} ({type(exc).__name__})")
    raise EngineError("no container engine answers; tried " + ", ".join(tried), fix=NO_ENGINE_FIX)


def _definition(spec: ImageSpec, progress: Progress) -> dict[str, Any]:
    """The Containerfile alone, or with the layers' input files a build context (a tar)
    holding it and them, each fetched or found on the host and checked by sha256."""
    text = render_containerfile(spec).encode()
    if not spec.inputs:
        return {"fileobj": io.BytesIO(text)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Containerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
        for src in spec.inputs:
            progress(f"input {src.file}")
            tar.add(ensure(src), arcname=src.file)
    buf.seek(0)
    return {"fileobj": buf, "custom_context": True, "dockerfile": "Containerfile"}


class DockerEngine:
    name = "docker"
    network_isolated = True  # `--network none` always works here

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self.client = client or connect()
        # Labels this process's containers, so an interrupt removes them and no others.
        self.session = uuid.uuid4().hex[:12]

    def describe(self) -> str:
        v = self.client.version()
        names = [c.get("Name", "") for c in v.get("Components", [])]
        flavour = "podman" if any("Podman" in n for n in names) else "docker"
        return f"{flavour} {v.get('Version', '?')} (Docker API {v.get('ApiVersion', '?')})"

    def image_exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def image_id(self, tag: str) -> str:
        return self.client.images.get(tag).id

    def list_images(self) -> list[dict[str, str]]:
        rows = []
        for img in self.client.images.list(filters={"label": "org.cbuild.target"}):
            labels = img.labels or {}
            for tag in img.tags or ["<none>"]:
                rows.append(
                    {
                        "tag": tag,
                        "id": img.id,
                        "target": labels.get("org.cbuild.target", ""),
                        "spec_hash": labels.get("org.cbuild.spec-hash", ""),
                    }
                )
        return rows

    # --- images -------------------------------------------------------------------------------
    def ensure_base(self, base: BaseImage, progress: Progress) -> str:
        if self.image_exists(base.local_tag):
            return base.local_tag
        progress(f"pulling base {base.ref}")
        try:
            repo, _, tag = base.ref.rpartition(":")
            self.client.images.pull(repo, tag=tag).tag(*base.local_tag.rsplit(":", 1))
            return base.local_tag
        except docker.errors.APIError as exc:
            reason = str(exc.explanation or exc).splitlines()[0][:160]
            progress(f"no registry answers ({reason}); bootstrapping {base.suite} from the mirror")
        self._bootstrap(base, progress)
        return base.local_tag

    def _bootstrap(self, base: BaseImage, progress: Progress) -> None:
        if base.distribution != "debian":
            raise EngineError(
                f"cannot bootstrap {base.distribution} without a registry",
                fix=f"make {base.ref} pullable, or import it as {base.local_tag}",
            )
        if not shutil.which("mmdebstrap"):
            raise EngineError(
                f"no registry answers for {base.ref} and mmdebstrap is not installed",
                fix="apt-get install mmdebstrap (or make the registry reachable)",
            )
        with tempfile.TemporaryDirectory(prefix="cbuild-base-") as tmp:
            tar = Path(tmp) / "rootfs.tar"
            progress(f"mmdebstrap --variant=minbase {base.suite} (about 30 s)")
            proc = subprocess.run(
                ["mmdebstrap", "--variant=minbase", base.suite, str(tar)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.splitlines()[-15:])
                raise EngineError(
                    f"mmdebstrap failed (exit {proc.returncode}):\n{tail}",
                    fix="check that Debian's mirror is reachable and you are root",
                )
            progress(f"importing {tar.stat().st_size // 2**20} MiB root filesystem")
            result = self.client.api.import_image_from_file(str(tar))
            image_id = _import_id(result)
            # Podman's compat import ignores repository/tag: tag the id ourselves.
            self.client.images.get(image_id).tag(*base.local_tag.rsplit(":", 1))
        progress(f"base ready: {base.local_tag}")

    def build_image(self, spec: ImageSpec, progress: Progress) -> str:
        if self.image_exists(spec.tag):
            return spec.tag
        base = self.ensure_base(spec.base, progress)
        progress(f"building {spec.tag}")
        stream = self.client.api.build(
            **_definition(spec, progress),
            tag=spec.tag,
            buildargs={BASE_ARG: base},
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
        )
        last: list[str] = []
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                msg = chunk.get("error") or json.dumps(chunk.get("errorDetail"))
                raise EngineError(
                    f"image build of {spec.name} failed: {msg}\n" + "".join(last[-15:]),
                    fix=f"inspect images/{spec.name}/Containerfile; run it by hand "
                    "with `podman build` to see the whole log",
                )
            line = chunk.get("stream", "")
            if line.strip():
                last.append(line)
                if line.lstrip().upper().startswith("STEP"):  # buildah "STEP 2/17", docker "Step"
                    progress(line.strip()[:160])
        if not self.image_exists(spec.tag):
            raise EngineError(
                f"image build of {spec.name} ended without an image:\n" + "".join(last[-15:])
            )
        return spec.tag

    # --- containers ---------------------------------------------------------------------------
    def interactive_argv(self, spec: RunSpec, *, tty: bool) -> list[str]:
        """`podman run -it`/`docker run -it` against the engine this object talks to."""
        flavour = "podman" if self.describe().startswith("podman") else "docker"
        head = [flavour]
        url = self.url()
        if url:
            head += ["--remote", "--url", url] if flavour == "podman" else ["-H", url]
        argv = [*head, "run", "--rm", "-i", *(["-t"] if tty else [])]
        argv += ["--network", "host" if spec.network else "none", "-w", spec.workdir]
        for k, v in spec.env.items():
            argv += ["-e", f"{k}={v}"]
        for m in spec.mounts:
            argv += ["-v", f"{m.host}:{m.container}:{m.mode}"]
        return [*argv, spec.image, *spec.command]

    def url(self) -> str | None:
        """The socket the SDK client talks to (a command line tool must use the same engine)."""
        api = getattr(self.client, "api", None)
        adapter = getattr(api, "_custom_adapter", None)
        path = getattr(adapter, "socket_path", None)
        if path:
            return f"unix://{path}"
        base = getattr(api, "base_url", "")
        return base if base.startswith(("tcp://", "unix://", "ssh://")) else None

    def stop_all(self) -> int:
        """Remove every container this engine started that is still there (on Ctrl-C)."""
        found = self.client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={self.session}"}
        )
        for c in found:
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        return len(found)

    @staticmethod
    def _wait(container: Any, poll: Callable[[], None] = lambda: None) -> int:
        """Poll the container's state twice a second: Podman 4's wait endpoint spins a core
        while it waits, as its follow-logs does, which a parallel build cannot spare."""
        while True:
            poll()
            container.reload()
            state = container.attrs.get("State", {})
            if state.get("Status") in ("exited", "dead", "stopped") or not state.get("Running"):
                if state.get("Status") in ("created", "configured", "initialized"):
                    time.sleep(0.1)  # not started yet
                    continue
                return int(state.get("ExitCode", -1))
            time.sleep(0.5)

    def run(
        self,
        spec: RunSpec,
        log: Path,
        progress: Progress | None = None,
        stream: Progress | None = None,
    ) -> RunResult:
        """The command's output goes straight into the log, bound into the container: `tail -f`
        works, and no output is streamed through the API (Podman 4's follow-logs spins a
        whole core per stream, which halved what parallel builds gain); `stream` is fed by
        tailing that file at each poll."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(spec.command)}\n")
        start = log.stat().st_size
        volumes = {str(m.host): {"bind": m.container, "mode": m.mode} for m in spec.mounts}
        volumes[str(log.resolve())] = {"bind": LOG_PATH, "mode": "rw"}
        container = self.client.containers.create(
            spec.image,
            ["/bin/sh", "-c", f'exec "$@" >>{LOG_PATH} 2>&1', "sh", *spec.command],
            environment=spec.env,
            volumes=volumes,
            network_mode="host" if spec.network else "none",
            working_dir=spec.workdir,
            labels={RUN_LABEL: self.session},
            detach=True,
        )
        try:
            container.start()
            tail = LogTail(log, start, stream)
            code = self._wait(container, tail.poll)
            tail.poll(final=True)
        finally:
            # Always removed, also on Ctrl-C: no container is left running.
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        with log.open("rb") as fh:
            fh.seek(start)
            output = fh.read().decode("utf-8", errors="replace")
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"[exit {code}]\n")
        if progress:
            for line in output.splitlines():
                if line.strip():
                    progress(line[:200])
        return RunResult(code, output)


class LogTail:
    """Feeds `stream` the complete lines a log file gained since `start` (the rest at the end)."""

    def __init__(self, log: Path, start: int, stream: Progress | None) -> None:
        self.log, self.pos, self.stream, self.partial = log, start, stream, b""

    def poll(self, final: bool = False) -> None:
        if self.stream is None:
            return
        with self.log.open("rb") as fh:
            fh.seek(self.pos)
            data = self.partial + fh.read()
            self.pos = fh.tell()
        *lines, self.partial = data.split(b"\n")
        for line in lines:
            self.stream(line.decode("utf-8", errors="replace") + "\n")
        if final and self.partial:
            self.stream(self.partial.decode("utf-8", errors="replace"))
            self.partial = b""


def _import_id(result: str | bytes) -> str:
    text = result.decode() if isinstance(result, bytes) else result
    for line in reversed(text.strip().splitlines()):
        data = json.loads(line)
        for key in ("status", "id"):
            if str(data.get(key, "")).startswith("sha256:"):
                return data[key]
    raise EngineError(f"image import returned no image id: {text[:300]}")
