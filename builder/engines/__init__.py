"""Container engines behind one protocol (builder.engines.base): `ENGINES` is the registry,
`get_engine` picks one by name, or the first that answers ("auto")."""

from __future__ import annotations

from collections.abc import Callable

from builder.engines.base import Engine, Progress
from builder.errors import CbuildError, ConfigError, EngineError


def _docker() -> Engine:
    from builder.engines.docker import DockerEngine  # the docker SDK loads only when used

    return DockerEngine()


def _apptainer() -> Engine:
    from builder.engines.apptainer import ApptainerEngine

    return ApptainerEngine()


# name -> factory; a factory raises EngineError when its engine does not answer here.
# Order is auto's: Docker first (today's default where both answer; HPC nodes usually have
# only Apptainer).
ENGINES: dict[str, Callable[[], Engine]] = {"docker": _docker, "apptainer": _apptainer}


def get_engine(name: str, progress: Progress | None = None) -> Engine:
    """`docker` (Docker or Podman), `apptainer`, or `auto`: the first that answers, said
    through `progress`."""
    if name in ENGINES:
        return ENGINES[name]()
    if name != "auto":
        raise ConfigError(
            f"unknown engine {name!r}", fix=f"use --engine {'|'.join([*ENGINES, 'auto'])}"
        )
    tried = []
    for kind, factory in ENGINES.items():
        try:
            engine = factory()
        except CbuildError as exc:
            tried.append(f"{kind}: {exc.message}")
            continue
        if progress:
            progress(f"engine: {kind} (auto: {engine.describe()})")
        return engine
    raise EngineError(
        "no engine answers (auto): " + "; ".join(tried),
        fix="start Podman/Docker (ci/setup.sh) or install Apptainer (README, Apptainer)",
    )


__all__ = ["ENGINES", "Engine", "get_engine"]
