"""Connecting to the Docker engine (docker SDK), with errors a user can act on."""

from __future__ import annotations

from typing import Any

from fmuia.errors import FmuiaError


class EngineError(FmuiaError):
    """No Docker engine could be reached, or the engine refused a request."""

    exit_code = 1  # a run failed (see fmuia.console): not the input's fault, not a bug


class SubmissionError(FmuiaError):
    """A submission (image, tar file, manifest row) cannot be used as given."""


def client(timeout: int = 600) -> Any:
    """A ``docker.DockerClient`` for the engine named by the environment (``DOCKER_HOST``, default socket).

    Raises :class:`EngineError` with a hint when no engine answers.
    """
    import docker  # imported here: ``fmuia --help`` must not pay for it

    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # DockerException, connection errors: all mean "no engine"
        raise EngineError(
            f"cannot reach a Docker engine ({exc.__class__.__name__}: {exc}); start one "
            "(e.g. `sudo dockerd`, or `bash .ci/docker-engine.sh` as root) or set DOCKER_HOST"
        ) from None
    return c
