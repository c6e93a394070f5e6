"""One Docker engine of a batch, driven through its API only: connect, load images (once per host,
verified by image id), place the hidden test set (a declared path, or a volume filled once with
``put_archive``), run one submission in a slot and pull its ``/output`` back with ``get_archive``.

Every engine, local or remote, goes the same way (no bind mount of the coordinator's folders, except the
input of a host whose ``data_path`` is declared: the default local host declares the input folder itself).
Engine trouble (connection refused or dropped, a container or volume that vanished) raises
:class:`HostDown`: the scheduler marks the host down and gives the submission to another host.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from submission.engine import SubmissionError
from submission.hosts import Host, Slot, discover_gpus, engine_resources
from submission.runner import (
    ERROR,
    INVALID,
    OK,
    Limits,
    RunResult,
    classify_exit,
    container_config,
    prepare_output,
    write_logs,
)
from submission.transfer import OutputTooLarge, dir_tar, input_tar, safe_extract

_NEVER = ["/fmuia-helper-never-started"]  # helper containers are created (for the archive API), never run


class HostDown(Exception):
    """The engine cannot be used any more (unreachable, or it lost our container/volume)."""


class Interrupted(Exception):
    """The batch is stopping (Ctrl-C): the run was killed and is to be redone later."""


def _is_engine_trouble(exc: BaseException) -> bool:
    import docker.errors
    import requests.exceptions

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                            docker.errors.NotFound, ConnectionError))


def tar_image_id(path: str | os.PathLike) -> str | None:
    """The image id a ``docker save`` tar (plain or gzip) holds: ``sha256:`` + its config digest.
    ``None`` when the archive does not say (the id the engine reports after loading is then used)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.getmember("manifest.json")
            manifest = json.load(tar.extractfile(member))
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return None
    try:
        config = manifest[0]["Config"]
    except (LookupError, TypeError):
        return None
    digest = os.path.basename(str(config)).removesuffix(".json")
    return f"sha256:{digest}" if len(digest) == 64 else None


_TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
# what the TLS layer said, inside requests' retry message: "[SSL: CODE] text (_ssl.c:N)" or, when the engine
# drops the connection first (TLS 1.3 rejects a client certificate after the handshake), "SSLEOFError(8, 'text"
_SSL_REASON = re.compile(r"\[SSL: [A-Z0-9_]+\] ([^(']+)|SSL\w*Error\(\d+, '([^(\['][^(']*)")


def _tls_hint(url: str, text: str) -> str:
    """What to check when a ``tcp://`` engine refused the connection over TLS ("" when it is no TLS matter)."""
    if not url.startswith("tcp://"):
        return ""
    if "HTTP request to an HTTPS server" in text:
        return "; the engine wants TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
    if "TLS handshake" in text or "SSL" in text or "certificate" in text.lower():
        return ("; check the TLS files in DOCKER_CERT_PATH: ca.pem (the CA that signed the engine's certificate), "
                "cert.pem and key.pem (a client certificate that CA signed, extendedKeyUsage clientAuth)")
    return ""


def connect(url: str, timeout: int = 3600) -> Any:
    """A ``docker.DockerClient`` for ``url``: TLS settings from the environment (``DOCKER_TLS_VERIFY``,
    ``DOCKER_CERT_PATH`` holding ``ca.pem``, ``cert.pem``, ``key.pem``, as the docker CLI reads them) for
    ``tcp://``; the ``ssh`` command for ``ssh://`` (the SDK still imports paramiko for it), after one login
    that may not prompt (:func:`_ssh_probe`). Raises :class:`SubmissionError` when the TLS files are
    missing or the ssh login or the far side's docker fails, the SDK's errors when the engine does not answer."""
    import docker
    from docker.utils import kwargs_from_env

    kwargs: dict[str, Any] = {"base_url": url, "timeout": timeout}
    if url.startswith("tcp://"):
        cert_path = os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
        tls = None
        if os.environ.get("DOCKER_CERT_PATH") or os.environ.get("DOCKER_TLS_VERIFY"):
            missing = [f for f in _TLS_FILES if not os.path.isfile(os.path.join(cert_path, f))]
            if missing:
                raise SubmissionError(f"TLS for {url}: {cert_path} has no {', '.join(missing)} "
                                      "(DOCKER_CERT_PATH must hold ca.pem, cert.pem and key.pem)")
            tls = kwargs_from_env().get("tls")
        if tls:
            kwargs["tls"] = tls
    if url.startswith("ssh://"):
        if importlib.util.find_spec("paramiko") is None:  # docker.transport.sshconn imports it unconditionally
            raise SubmissionError(f"{url}: ssh:// engines need the paramiko package (pip install paramiko); "
                                  "the docker SDK imports it even when it runs the ssh command")
        kwargs["use_ssh_client"] = True
        kwargs["version"] = _client_version(_ssh_probe(url))  # asked once here, not by the SDK over ssh again
    if "tls" in kwargs:
        dc = _tls_client(kwargs)
    else:
        dc = docker.DockerClient(**kwargs)
    dc.ping()
    return dc


def _client_version(server: str) -> str:
    """The API version to speak to an engine that speaks ``server``: it, or the SDK's own when older."""
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from docker.utils import version_lt

    return server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else DEFAULT_DOCKER_API_VERSION


_SSH_CONNECT_TIMEOUT = 20  # seconds for the TCP connection and the login of the probe
_API_VERSION = re.compile(r"^\d+\.\d+$")


def _ssh_probe(url: str) -> str:
    """Log in to an ``ssh://`` host the way the SDK will (the ``ssh`` command, the coordinator's ssh config
    and keys) but with ``BatchMode`` (never a prompt) and a connect timeout, and ask the far side's docker
    CLI for its engine's API version. Raises :class:`SubmissionError` saying what failed: the login (what
    ssh said), a missing docker CLI there, or that CLI not reaching its engine."""
    u = urllib.parse.urlparse(url)
    args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={_SSH_CONNECT_TIMEOUT}"]
    if u.username:
        args += ["-l", u.username]
    if u.port:
        args += ["-p", str(u.port)]
    args += ["--", str(u.hostname), "docker version --format '{{.Server.APIVersion}}'"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=_SSH_CONNECT_TIMEOUT + 60)
    except FileNotFoundError:
        raise SubmissionError("ssh:// hosts need the ssh command on PATH (openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"ssh gave no answer in {_SSH_CONNECT_TIMEOUT + 60} s") from None
    said = next((line.strip() for line in reversed(proc.stderr.splitlines()) if line.strip()),
                f"exit status {proc.returncode}")
    if proc.returncode == 255:  # ssh's own failure (the remote command's status otherwise)
        raise SubmissionError(f"ssh login failed ({said}); the coordinator must log in with a key, without a "
                              "prompt (its ~/.ssh/config, key files or ssh-agent)")
    if proc.returncode == 127:
        raise SubmissionError(f"the host has no docker CLI for ssh:// ({said}); install docker there")
    if proc.returncode != 0:
        group = "; the ssh user must be in the docker group" if "permission denied" in said.lower() else ""
        raise SubmissionError(f"docker on the host cannot reach its engine ({said}){group}")
    version = proc.stdout.strip().splitlines()[-1].strip() if proc.stdout.strip() else ""
    if not _API_VERSION.match(version):
        raise SubmissionError(f"docker on the host gave no API version (it printed {proc.stdout.strip()[:200]!r})")
    return version


def _tls_client(kwargs: dict[str, Any]) -> Any:
    """A TLS client whose requests session ignores the environment: requests lets REQUESTS_CA_BUNDLE /
    CURL_CA_BUNDLE replace the session's CA (``DOCKER_CERT_PATH/ca.pem``), and the engine's certificate
    then fails to verify. The API version is asked first (``version="auto"`` would ask before
    ``trust_env`` can be turned off)."""
    import docker

    probe = docker.DockerClient(**kwargs, version="1.24")
    probe.api.trust_env = False
    try:
        server = str(probe.api.version(api_version=False).get("ApiVersion") or "1.24")
    finally:
        probe.close()
    dc = docker.DockerClient(**kwargs, version=_client_version(server))
    dc.api.trust_env = False
    return dc


class HostSession:
    """The coordinator's handle on one engine during a batch (thread-safe where the slots share it)."""

    def __init__(self, host: Host, batch_id: str, *, source_client: Callable[[], Any] | None = None,
                 client: Any = None):
        self.host = host
        self.batch_id = batch_id
        self._given_client = client  # already connected (library callers); else connect() opens host.url
        self.dc: Any = None
        self.nvidia = False
        self.cpus: tuple[int, ...] = ()
        self.memory = 0
        self.down: str | None = None  # why it is down
        self.images: dict[str, str] = {}  # manifest source -> image id on this engine
        self.loaded: list[str] = []  # ids this batch loaded (removed afterwards)
        self.data_volume: str | None = None
        self.running: dict[int, Any] = {}  # slot index -> container
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._data_lock = threading.Lock()
        self._source_client = source_client

    @property
    def url(self) -> str:
        return self.host.url

    def connect(self) -> None:
        """Reach the engine and read its CPUs, memory and GPU support; raises :class:`HostDown`."""
        try:
            self.dc = self._given_client if self._given_client is not None else connect(self.url)
            self.cpus, self.memory, self.nvidia = engine_resources(self.dc)
        except SubmissionError as exc:
            raise HostDown(exc.message) from None
        except Exception as exc:
            text = f"{exc.__class__.__name__}: {exc}"
            ssl = _SSL_REASON.search(text)
            if ssl:  # requests wraps it in a long retry message: keep what the handshake said
                said = (ssl.group(1) or ssl.group(2)).strip()
                eof = " (the engine closed the connection)" if "EOF" in said else ""
                text = f"TLS handshake failed: {said}{eof}"
            raise HostDown(f"engine unreachable ({text}){_tls_hint(self.url, text)}") from None

    def mark_down(self, reason: str) -> None:
        with self._lock:
            if self.down is None:
                self.down = reason

    def plan(self, *, gpus_per_run: int | None, n_slots: int | None, run_memory: int, probe_image: str | None) -> list[Slot]:
        """This host's slots (see :func:`submission.hosts.plan_slots`)."""
        from submission.hosts import plan_slots

        h = self.host
        gpu_ids: tuple[str, ...] = ()
        if gpus_per_run:
            gpu_ids = h.gpus if h.gpus is not None else discover_gpus(self.dc, h, probe_image)
        cpus = h.cpus if h.cpus is not None else self.cpus
        memory = h.memory if h.memory is not None else self.memory
        return plan_slots(self.url, gpu_ids=gpu_ids, cpus=cpus, memory=memory or run_memory,
                          gpus_per_run=gpus_per_run, n_slots=h.slots or n_slots, run_memory=run_memory)

    # ---- images ----------------------------------------------------------------------------------------

    def ensure_image(self, source: str, tar: Path | None, image: str | None, expected: str | None) -> str:
        """The id of the submission's image on this engine, loading it once (tar, or saved from the
        coordinator's engine for an ``image`` row); the loaded id must be ``expected`` when known."""
        import docker.errors

        with self._lock:  # one lock per image: different images load side by side, the same one once
            load_lock = self._load_locks.setdefault(source, threading.Lock())
        with load_lock:
            if source in self.images:
                return self.images[source]
            try:
                if tar is None and expected is None:
                    expected = self._source_image(image).id
                if expected is not None:
                    try:
                        self.dc.images.get(expected)
                        with self._lock:
                            self.images[source] = expected  # already there: used, never removed by us
                        return expected
                    except docker.errors.ImageNotFound:
                        pass
                if tar is not None:
                    try:
                        with open(tar, "rb") as fh:
                            ids = [i.id for i in self.dc.images.load(fh)]
                    except docker.errors.APIError as exc:
                        raise SubmissionError(f"{tar}: docker could not load it as an image archive ({exc.explanation or exc})") from None
                else:
                    ids = [i.id for i in self.dc.images.load(self._source_image(image).save(named=False))]
            except (SubmissionError, HostDown):
                raise
            except Exception as exc:
                if _is_engine_trouble(exc):
                    raise HostDown(f"loading the image failed ({exc.__class__.__name__}: {exc})") from None
                raise
            if not ids:
                raise SubmissionError(f"{source}: the archive holds no image")
            got = expected if expected in ids else ids[0]
            if expected is not None and got != expected:
                raise SubmissionError(f"{source}: the engine loaded {ids[0]}, expected image id {expected}")
            with self._lock:
                self.images[source] = got
                self.loaded.append(got)
            return got

    def _source_image(self, image: str | None) -> Any:
        from submission.build import get_image

        if self._source_client is None:
            raise SubmissionError(f"{image}: no engine to take the image from")
        return get_image(self._source_client(), str(image))

    # ---- the hidden test set -------------------------------------------------------------------------------

    def input_mount(self, input_dir: Path, digest: str, image_id: str, *, reuse: str | None) -> tuple[Any, str | None]:
        """The read-only ``/input`` mount: the declared ``data_path``, or a volume filled once from
        ``input_dir`` (through a helper container created from ``image_id``, never started). ``reuse``: a
        volume a previous run filled completely. Returns (mount, volume name or ``None``)."""
        from docker.types import Mount

        if self.host.data_path:
            return Mount("/input", self.host.data_path, type="bind", read_only=True), None
        with self._data_lock:
            if self.data_volume is None:
                name = f"fmuia-data-{digest}"
                try:
                    self.data_volume = self._fill_volume(name, input_dir, image_id, reuse == name)
                except Exception as exc:
                    if _is_engine_trouble(exc):
                        raise HostDown(f"copying the test set failed ({exc.__class__.__name__}: {exc})") from None
                    raise
            return Mount("/input", self.data_volume, type="volume", read_only=True), self.data_volume

    def _fill_volume(self, name: str, input_dir: Path, image_id: str, reuse: bool) -> str:
        import docker.errors

        try:
            vol = self.dc.volumes.get(name)
            if reuse:
                return name
            vol.remove(force=True)
        except docker.errors.NotFound:
            pass
        self.dc.volumes.create(name, labels={"fmuia.batch": self.batch_id, "fmuia.data": "1"})
        helper = self.dc.containers.create(image_id, entrypoint=_NEVER, network_mode="none",
                                           mounts=[_volume_mount("/vol", name)], labels={"fmuia.batch": self.batch_id})
        try:
            with input_tar(input_dir, "vol") as fh:
                helper.put_archive("/", fh)
        finally:
            helper.remove(force=True)
        return name

    # ---- one run ----------------------------------------------------------------------------------------

    def run(self, slot: Slot, image_id: str, name: str, attempt: int, input_mount: Any, limits: Limits,
            sub_dir: Path, *, max_output: int, stopping: threading.Event) -> RunResult:
        """Run ``image_id`` in ``slot``; pull ``/output`` into ``sub_dir/output`` (when it exited 0) and
        its log into ``sub_dir/output.log``. Raises :class:`HostDown` or :class:`Interrupted`."""
        import docker.errors

        out = prepare_output(sub_dir / "output", overwrite=True)
        log_path = sub_dir / "output.log"
        labels = {"fmuia.batch": self.batch_id, "fmuia.name": name}
        vol_name = f"fmuia-out-{self.batch_id}-{name}-{attempt}"[:200]
        memory = slot.memory if slot.memory is not None else limits.memory
        t0 = time.monotonic()
        container = None
        timed_out = False
        try:
            self.dc.volumes.create(vol_name, labels=labels)
            # the volume root is root's 0755: make it writable by the image's user (any UID), like /tmp
            helper = self.dc.containers.create(image_id, entrypoint=_NEVER, network_mode="none",
                                               mounts=[_volume_mount("/vol", vol_name)], labels=labels)
            try:
                helper.put_archive("/", dir_tar("vol", 0o1777))
            finally:
                helper.remove(force=True)
            kwargs = container_config(limits, slot, mounts=[input_mount, _volume_mount("/output", vol_name)],
                                      nvidia=self.nvidia, labels=labels)
            container = self.dc.containers.create(image_id, **kwargs)
            self.running[slot.index] = container
            if stopping.is_set():
                raise Interrupted("stopping")
            try:
                container.start()
            except docker.errors.APIError as exc:
                if _is_engine_trouble(exc):
                    raise
                return RunResult(image_id, ERROR, f"the engine could not start the container: {exc.explanation or exc}",
                                 None, False, time.monotonic() - t0, str(out), str(log_path))
            timed_out = self._wait(container, time.monotonic() + limits.time_limit)
            if timed_out:
                try:
                    container.kill()
                except docker.errors.APIError as exc:
                    if isinstance(exc, docker.errors.NotFound):
                        raise
                container.wait(timeout=120)
            if stopping.is_set():
                raise Interrupted("stopped by the user (Ctrl-C)")
            seconds = time.monotonic() - t0
            container.reload()
            state = container.attrs.get("State", {})
            exit_code, oom = state.get("ExitCode"), bool(state.get("OOMKilled"))
            write_logs(container, log_path)
            status, reason = classify_exit(timed_out=timed_out, oom=oom, exit_code=exit_code, limits=limits,
                                           memory=f"{memory >> 20}m" if isinstance(memory, int) else memory,
                                           log_path=log_path)
            result = RunResult(image_id, status, reason, exit_code, oom, round(seconds, 3), str(out), str(log_path))
            if status == OK:
                stream, _ = container.get_archive("/output")
                try:
                    result.unsafe_entries = safe_extract(stream, out, max_bytes=max_output, strip="output")
                except OutputTooLarge:
                    result.status, result.reason = INVALID, f"output larger than the {max_output >> 20} MiB cap"
                except tarfile.TarError as exc:
                    raise HostDown(f"the output archive broke off ({exc})") from None
            return result
        except (Interrupted, HostDown):
            raise
        except Exception as exc:
            if _is_engine_trouble(exc) or self._unreachable():
                raise HostDown(f"{exc.__class__.__name__}: {exc}") from None
            raise
        finally:
            self.running.pop(slot.index, None)
            for thing in (container, _Vol(self.dc, vol_name)):
                if thing is not None:
                    try:
                        thing.remove(force=True)
                    except Exception:
                        pass  # a dead engine: nothing more to do from here

    def _wait(self, container: Any, deadline: float) -> bool:
        """Wait for the container to exit; ``True`` when the deadline passed first. A dropped connection
        (a read timeout over a unix socket reads the same) is a timeout only if the engine still answers
        and the deadline is near; an engine that does not answer is :class:`HostDown`."""
        import requests.exceptions

        if self.url.startswith("ssh://"):
            return self._wait_ssh(container, deadline)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                container.wait(timeout=max(1.0, left))
                return False
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                if self._unreachable():
                    raise HostDown(f"engine unreachable during the run ({exc.__class__.__name__})") from None

    def _wait_ssh(self, container: Any, deadline: float) -> bool:
        """:meth:`_wait` for an ``ssh://`` engine, where the SDK reads the ssh command's pipe and a read
        never times out: a timer kills the container at the deadline instead (``True`` when it did)."""
        import requests.exceptions

        fired = threading.Event()

        def expire() -> None:
            fired.set()
            try:
                container.kill()
            except Exception:
                pass  # it exited meanwhile, or the engine is gone (the wait below says which)

        timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
        timer.daemon = True
        timer.start()
        try:
            while True:
                try:
                    container.wait()
                    return fired.is_set()
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                    if self._unreachable():
                        raise HostDown(f"engine unreachable during the run ({exc.__class__.__name__})") from None
        finally:
            timer.cancel()

    def _unreachable(self) -> bool:
        try:
            self.dc.ping()
            return False
        except Exception:
            return True

    def kill_running(self) -> None:
        """Kill this host's running containers (Ctrl-C); their slots then record the interruption."""
        for container in list(self.running.values()):
            try:
                container.kill()
            except Exception:
                pass

    # ---- cleanup ----------------------------------------------------------------------------------------

    def cleanup(self, *, keep_images: bool, earlier_batches: tuple[str, ...] = ()) -> list[str]:
        """Remove this batch's containers and output volumes (and those an interrupted earlier run of the
        same board left, ``earlier_batches``); unless ``keep_images``, also the images it loaded and the
        test-set volume. Returns what could not be removed."""
        import docker.errors

        left: list[str] = []
        if self.dc is None or self._unreachable():
            return [f"{self.url}: unreachable, not cleaned"] if self.dc is not None else []
        try:
            for batch in dict.fromkeys((self.batch_id, *earlier_batches)):
                flt = {"label": f"fmuia.batch={batch}"}
                for c in self.dc.containers.list(all=True, filters=flt):
                    c.remove(force=True)
                for v in self.dc.volumes.list(filters=flt):
                    if keep_images and (v.attrs.get("Labels") or {}).get("fmuia.data") == "1":
                        continue
                    v.remove(force=True)
            if not keep_images:
                if self.data_volume is not None:
                    try:
                        self.dc.volumes.get(self.data_volume).remove(force=True)
                    except docker.errors.NotFound:
                        pass
                for image_id in dict.fromkeys(self.loaded):
                    try:
                        self.dc.images.remove(image_id, force=True)
                    except docker.errors.ImageNotFound:
                        pass
                    except Exception as exc:
                        left.append(f"{self.url}: image {image_id[:19]}: {exc}")
        except Exception as exc:
            left.append(f"{self.url}: {exc.__class__.__name__}: {exc}")
        return left


class _Vol:
    def __init__(self, dc: Any, name: str):
        self.dc, self.name = dc, name

    def remove(self, force: bool = True) -> None:
        self.dc.api.remove_volume(self.name, force=force)


def _volume_mount(target: str, name: str, read_only: bool = False) -> Any:
    from docker.types import Mount

    return Mount(target, name, type="volume", read_only=read_only)
