"""Run one submission container the way a trusted challenge platform does, then validate its output.

Isolation and limits (every run, whatever the image):

* no network (``network_mode="none"``), every capability dropped, ``no-new-privileges``, a pids limit;
* ``/input`` bind-mounted read-only, ``/output`` read-write; by default a read-only root filesystem with a
  tmpfs ``/tmp`` (as the baseline image expects);
* memory limit == memory+swap limit (no swapping past it), CPU quota, GPUs only when asked for;
* a wall-clock limit: past it the container is killed and the run reported as ``timed out``;
* the container's stdout/stderr are captured (capped by the engine) to ``<output>.log`` next to the output.

Exit 137 that the runner did not cause (the kernel's OOM killer) is reported as ``killed: memory limit``.
The output is then validated with :func:`fmuia.check.check_predictions`, which reads only regular files
inside the folder: no symlink is followed out of it. Nothing assumes our own entrypoint: an image built from
the official template (``ENTRYPOINT ["python"]``, ``CMD ["model.py"]``) runs the same way.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmuia._atomic import ensure_dir, write_json
from submission.build import get_image
from submission.engine import EngineError, SubmissionError
from submission.engine import client as _client
from submission.hosts import Slot

OK = "ok"
TIMED_OUT = "timed out"
OOM = "killed: memory limit"
FAILED = "failed"
INVALID = "invalid output"
ERROR = "error"

_SIZE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


@dataclass
class Limits:
    """Resource limits of one run (CLI: ``--time-limit``, ``--memory``, ``--cpus``, ``--gpus`` ...)."""

    time_limit: float = 3600.0  # seconds of wall clock, start to exit
    memory: str = "16g"  # also the memory+swap limit
    cpus: float | None = None  # CPU quota (None: no quota)
    gpus: str = "auto"  # "auto" (all when the engine has the NVIDIA runtime), "all", "none", "N", "device=0,1"
    pids: int = 1024
    tmp_size: str = "4g"  # the tmpfs /tmp (counts against the memory limit)
    shm_size: str = "1g"
    read_only: bool = True  # read-only root filesystem
    user: str | None = None  # "UID[:GID]"; None: the image's own USER
    log_max_size: str = "50m"  # engine-side cap on the captured log

    def __post_init__(self) -> None:
        if not self.time_limit > 0:
            raise SubmissionError(f"time limit must be positive, got {self.time_limit}")
        for name in ("memory", "tmp_size", "shm_size", "log_max_size"):
            if not _SIZE.match(str(getattr(self, name))):
                raise SubmissionError(f"{name}: expected a size such as 512m or 16g, got {getattr(self, name)!r}")
        if self.cpus is not None and not self.cpus > 0:
            raise SubmissionError(f"cpus must be positive, got {self.cpus}")
        if self.pids < 1:
            raise SubmissionError(f"pids limit must be at least 1, got {self.pids}")
        _device_requests(self.gpus, nvidia=True)  # validates the spelling


@dataclass
class RunResult:
    """What happened in one run. ``status`` is one of ``ok``, ``timed out``, ``killed: memory limit``,
    ``failed`` (non-zero exit), ``invalid output`` (``fmuia check`` found errors) or ``error`` (engine)."""

    image: str
    status: str
    reason: str | None
    exit_code: int | None
    oom_killed: bool
    seconds: float
    output_dir: str
    log_path: str
    check: dict | None = None
    unsafe_entries: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        return asdict(self)


def log_path_for(output_dir: str | os.PathLike) -> Path:
    """Where a run's container log goes: ``<output>.log``, beside the output folder (not inside it)."""
    out = Path(output_dir)
    return out.parent / f"{out.name}.log"


def _device_requests(gpus: str, *, nvidia: bool) -> list | None:
    from docker.types import DeviceRequest

    g = str(gpus).strip().lower()
    if g in ("none", "0", ""):
        return None
    if g == "auto":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])] if nvidia else None
    if g == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if g.isdigit():
        return [DeviceRequest(count=int(g), capabilities=[["gpu"]])]
    if g.startswith("device="):
        ids = [i.strip() for i in g[len("device="):].split(",") if i.strip()]
        if ids:
            return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
    raise SubmissionError(f"--gpus: expected auto, all, none, a count N or device=ID[,ID...], got {gpus!r}")


def _has_nvidia_runtime(dc: Any) -> bool:
    """Whether the engine can hand GPUs to containers: an ``nvidia`` runtime, or the NVIDIA container
    toolkit's hook (what ``docker run --gpus`` uses) on this host."""
    if shutil.which("nvidia-container-runtime-hook"):
        return True
    try:
        return "nvidia" in (dc.info().get("Runtimes") or {})
    except Exception:
        return False


def prepare_output(output_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Create the output folder (writable by any UID: the container's user is the image's choice).

    A non-empty folder is refused unless ``overwrite``, which empties it first (links are removed, never
    followed).
    """
    out = Path(output_dir)
    if out.is_symlink():
        raise SubmissionError(f"{out}: the output folder must not be a symlink")
    if out.exists():
        if not out.is_dir():
            raise SubmissionError(f"{out}: exists and is not a folder")
        entries = list(out.iterdir())
        if entries and not overwrite:
            raise SubmissionError(f"{out}: output folder is not empty (choose an empty one, or pass --overwrite)")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    ensure_dir(out)
    out.chmod(0o777)
    return out


def unsafe_entries(output_dir: str | os.PathLike) -> list[str]:
    """Entries of the output that are not plain files or folders (symlinks, fifos, devices), relative paths.

    The walk never follows a link; these entries are reported and never read.
    """
    root = Path(output_dir)
    bad: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "symlink" if stat.S_ISLNK(mode) else "special file"
                bad.append(f"{p.relative_to(root).as_posix()} ({kind})")
    return sorted(bad)


def _write_logs(container: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
            fh.write(chunk)
    os.replace(tmp, path)


def _last_lines(path: Path, n: int = 3) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = [x for x in fh.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(line.strip()[:200] for line in lines[-n:])


def classify_exit(*, timed_out: bool, oom: bool, exit_code: int | None, limits: Limits, memory: str | int,
                  log_path: Path) -> tuple[str, str | None]:
    """(status, reason) of a finished container: timed out, killed by the memory limit, failed or ok."""
    if timed_out:
        return TIMED_OUT, f"timed out: no exit within the {limits.time_limit:g} s wall-clock limit (killed)"
    if oom or exit_code == 137:
        return OOM, f"killed: memory limit ({memory}, exit code {exit_code})"
    if exit_code != 0:
        tail = _last_lines(log_path)
        return FAILED, f"exit code {exit_code}" + (f"; log ends: {tail}" if tail else "")
    return OK, None


def write_logs(container: Any, path: Path) -> None:
    """The container's stdout/stderr (capped by the engine) into ``path``, atomically; a note if unreadable."""
    import docker.errors

    try:
        _write_logs(container, path)
    except (OSError, docker.errors.APIError) as exc:
        path.write_text(f"(could not read the container log: {exc})\n")


def container_config(limits: Limits, slot: Slot | None, *, mounts: list, nvidia: bool,
                     labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``containers.create`` keyword arguments of one run: the isolation and limits of every run,
    plus the slot's pinning when given (its GPU ids as ``device_requests``, its ``cpuset_cpus``, its
    memory share as ``mem_limit`` == ``memswap_limit``). ``mounts``: the ``/input`` and ``/output``
    mounts (``docker.types.Mount``). Pure: no engine is contacted.
    """
    from docker.types import DeviceRequest, LogConfig

    memory: str | int = limits.memory
    devices = _device_requests(limits.gpus, nvidia=nvidia)
    cpuset = None
    if slot is not None:
        if slot.memory is not None:
            memory = slot.memory
        if slot.pin_gpus:  # exactly the slot's GPUs (none for a CPU slot of a --gpus-per-run batch)
            devices = [DeviceRequest(device_ids=list(slot.gpu_ids), capabilities=[["gpu"]])] if slot.gpu_ids else None
        cpuset = slot.cpuset
    kwargs: dict[str, Any] = dict(
        network_disabled=True,
        network_mode="none",
        mounts=list(mounts),
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.pids,
        mem_limit=memory,
        memswap_limit=memory,
        nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
        device_requests=devices,
        read_only=limits.read_only,
        tmpfs={"/tmp": f"rw,nosuid,nodev,exec,size={limits.tmp_size},mode=1777"},
        shm_size=limits.shm_size,
        ipc_mode="private",
        log_config=LogConfig(type="json-file", config={"max-size": limits.log_max_size, "max-file": "1"}),
        labels={"fmuia.submission": "1", **(labels or {})},
        detach=True,
    )
    if cpuset:
        kwargs["cpuset_cpus"] = cpuset
    if limits.user:
        kwargs["user"] = limits.user
    return kwargs


def run_container(
    image: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    limits: Limits | None = None,
    overwrite: bool = False,
    docker_client: Any = None,
) -> RunResult:
    """Run ``image`` on ``input_dir`` (mounted read-only at ``/input``) writing to ``output_dir`` (``/output``).

    Returns a :class:`RunResult` whose status is ``ok`` (exit 0), ``timed out``, ``killed: memory limit``,
    ``failed`` or ``error``; the output is not validated here (see :func:`run_submission`).
    """
    import docker.errors
    import requests.exceptions
    from docker.types import Mount

    limits = limits or Limits()
    inp = Path(input_dir).resolve()
    if not inp.is_dir():
        raise SubmissionError(f"{input_dir}: no such input folder")
    out = prepare_output(output_dir, overwrite=overwrite).resolve()
    log_path = log_path_for(out)
    dc = docker_client or _client()
    img = get_image(dc, image)
    mounts = [Mount("/input", str(inp), type="bind", read_only=True),
              Mount("/output", str(out), type="bind", read_only=False)]
    kwargs = container_config(limits, None, mounts=mounts, nvidia=_has_nvidia_runtime(dc))
    t0 = time.monotonic()
    container = None
    timed_out = False
    try:
        try:
            container = dc.containers.create(img.id, **kwargs)
            container.start()
        except docker.errors.APIError as exc:
            return RunResult(image, ERROR, f"the engine could not start the container: {exc.explanation or exc}",
                             None, False, time.monotonic() - t0, str(out), str(log_path))
        try:
            container.wait(timeout=limits.time_limit)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            try:
                container.kill()
            except docker.errors.APIError:
                pass  # it ended on its own in the meantime
            container.wait(timeout=120)
        seconds = time.monotonic() - t0
        container.reload()
        state = container.attrs.get("State", {})
        exit_code = state.get("ExitCode")
        oom = bool(state.get("OOMKilled"))
        write_logs(container, log_path)
    except docker.errors.APIError as exc:
        raise EngineError(f"docker engine error while running {image}: {exc}") from None
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass
    status, reason = classify_exit(timed_out=timed_out, oom=oom, exit_code=exit_code, limits=limits,
                                   memory=limits.memory, log_path=log_path)
    return RunResult(image, status, reason, exit_code, oom, round(seconds, 3), str(out), str(log_path))


def run_submission(
    image: str,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    limits: Limits | None = None,
    data_root: str | os.PathLike | None = None,
    check: bool = True,
    overwrite: bool = False,
    docker_client: Any = None,
) -> RunResult:
    """:func:`run_container`, then validate the output with ``fmuia check`` against ``data_root``
    (default: the input folder). An invalid output turns the status into ``invalid output``; the check
    report is kept in ``result.check`` and written to ``<output>.check.json``.
    """
    result = run_container(
        image, input_dir, output_dir, limits=limits, overwrite=overwrite, docker_client=docker_client
    )
    out = Path(result.output_dir)
    result.unsafe_entries = unsafe_entries(out)
    if not check or result.status != OK:
        return result
    from fmuia.check import check_predictions

    report = check_predictions(out, data_root if data_root is not None else input_dir)
    result.check = report.to_dict()
    write_json(out.parent / f"{out.name}.check.json", result.check)
    if not report.ok:
        first = report.errors[0]
        result.status = INVALID
        result.reason = f"fmuia check: {len(report.errors)} error(s); first: {first}"
    return result
