"""Docker engines that run submissions (hosts) and the slots each one offers.

A *host* is one Docker engine, named by a URL the docker SDK accepts (``unix:///var/run/docker.sock``,
``ssh://user@host`` through the ``ssh`` command (the SDK also needs paramiko installed), ``tcp://host:2376``
with TLS: ``DOCKER_TLS_VERIFY=1`` and ``DOCKER_CERT_PATH`` holding ``ca.pem``, ``cert.pem``, ``key.pem``,
one client certificate for every tcp:// host of the batch). A *slot* is one place where one submission runs at a
time: a host, the GPU ids pinned to the container (``device_requests`` with device ids), its CPU set and its
memory share. The hosts file is a CSV with a header::

    url,gpus,cpus,memory,data_path,slots
    unix:///var/run/docker.sock,0-3,0-31,200g,,
    ssh://scorer@gpu2,auto,,,/srv/hidden-test,
    tcp://10.0.0.7:2376,none,0-7,32g,,2

``gpus``: ids (``0,1,2`` or ``0-3``), ``auto`` (ask the engine; the default) or ``none``. ``cpus``: the
host's CPUs for submissions as a cpuset (``0-15,32-47``; default: all the engine reports). ``memory``: the
memory for submissions (``200g``; default: all the engine reports). ``data_path``: where the hidden test
set already lies *on that host* (mounted read-only); empty: it is copied there once, into a volume.
``slots``: how many submissions at once (default: one per ``--gpus-per-run`` GPUs, else ``--slots``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.manifest import ManifestRow, read_csv_manifest
from submission.engine import SubmissionError

LOCAL_URL = "unix:///var/run/docker.sock"
_URL = re.compile(r"^(unix|ssh|tcp|npipe|http|https)://\S+$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes in a Docker-style size (``512m``, ``16g``, ``1.5g``, plain bytes)."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise SubmissionError(f"expected a size such as 512m or 16g, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    """A Docker size string for ``n`` bytes, in whole MiB (what ``mem_limit`` takes)."""
    return f"{max(1, n >> 20)}m"


def parse_ids(text: str) -> list[int]:
    """``0-3,8,10-11`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (sorted, no duplicates)."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise SubmissionError(f"expected ids such as 0-3,8, got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise SubmissionError(f"range {part!r} goes backwards")
        out.update(range(lo, hi + 1))
    if not out:
        raise SubmissionError(f"expected ids such as 0-3,8, got {text!r}")
    return sorted(out)


def format_ids(ids: list[int] | tuple[int, ...]) -> str:
    """The cpuset spelling of ``ids``: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True)
class Host:
    """One Docker engine and what it may give to submissions (``None``: ask the engine)."""

    url: str
    gpus: tuple[str, ...] | None = None  # GPU ids; None: discover ("auto"); (): none
    cpus: tuple[int, ...] | None = None  # CPU ids for submissions; None: all of the engine's
    memory: int | None = None  # bytes for submissions; None: the engine's total
    data_path: str | None = None  # hidden test set already on that host; None: copy it there
    slots: int | None = None
    row: int = 0  # line in the hosts file (0: not from a file)

    @property
    def local(self) -> bool:
        """Whether the engine shares this machine's filesystem (a unix socket)."""
        return self.url.startswith("unix://")


@dataclass(frozen=True)
class Slot:
    """Where one submission runs: host, pinned GPUs, CPU set, memory limit (bytes)."""

    host: str
    index: int
    gpu_ids: tuple[str, ...] = ()
    cpuset: str | None = None
    memory: int | None = None
    pin_gpus: bool = False  # True: the container gets exactly gpu_ids (--gpus-per-run); False: --gpus decides

    @property
    def name(self) -> str:
        return f"{self.host}#{self.index}"


def _check_host_row(row: ManifestRow) -> str | None:
    try:
        _host_from_row(row)
    except SubmissionError as exc:
        return exc.message
    return None


def _host_from_row(row: ManifestRow) -> Host:
    url = row["url"]
    if not _URL.match(url):
        raise SubmissionError(f"url {url!r}: expected unix://PATH, ssh://USER@HOST or tcp://HOST:PORT")
    g = row["gpus"].lower()
    try:
        gpus = None if g in ("", "auto") else () if g in ("none", "0-", "-") else tuple(str(i) for i in parse_ids(g))
    except SubmissionError as exc:
        raise SubmissionError(f"gpus: {exc.message} (or auto, none)") from None
    try:
        cpus = tuple(parse_ids(row["cpus"])) if row["cpus"] else None
    except SubmissionError as exc:
        raise SubmissionError(f"cpus: {exc.message}") from None
    try:
        memory = parse_size(row["memory"]) if row["memory"] else None
    except SubmissionError as exc:
        raise SubmissionError(f"memory: {exc.message}") from None
    data_path = row["data_path"] or None
    if data_path is not None and not data_path.startswith("/"):
        raise SubmissionError(f"data_path {data_path!r}: expected an absolute path on that host")
    slots = None
    if row["slots"]:
        if not row["slots"].isdigit() or int(row["slots"]) < 1:
            raise SubmissionError(f"slots: expected a whole number >= 1, got {row['slots']!r}")
        slots = int(row["slots"])
    return Host(url, gpus, cpus, memory, data_path, slots, row.line)


def read_hosts(path: str | os.PathLike) -> list[Host]:
    """Parse and validate a hosts file; every bad row is reported (``file:line N: ...``) at once."""
    rows = read_csv_manifest(
        path, ("url",), check=_check_host_row, unique="url", comments=True,
        header_message="header must have a `url` column (and optionally gpus,cpus,memory,data_path,slots), got {header}",
        where="line {}", error=SubmissionError,
    )
    if not rows:
        raise SubmissionError(f"{path}: the hosts file lists no engine")
    return [_host_from_row(r) for r in rows]


def local_host(docker_host: str | None = None) -> Host:
    """The default host: the engine ``DOCKER_HOST`` names (else the default socket), the input bind-mounted."""
    return Host(docker_host or os.environ.get("DOCKER_HOST") or LOCAL_URL)


def plan_slots(
    host: str,
    *,
    gpu_ids: tuple[str, ...],
    cpus: tuple[int, ...],
    memory: int,
    gpus_per_run: int | None,
    n_slots: int | None,
    run_memory: int,
) -> list[Slot]:
    """Split one host into slots.

    With ``gpus_per_run``: one slot per ``gpus_per_run`` GPUs (consecutive ids; at most ``n_slots``); a
    host without GPUs gets ``n_slots`` (default 1) CPU slots with no GPU, one with too few GPUs none.
    Otherwise ``n_slots`` (default 1) slots whose GPUs ``--gpus`` decides. CPUs are split into
    contiguous, disjoint sets (when there are fewer CPUs than slots, slots share them round-robin); each
    slot's memory is ``run_memory`` capped at an equal share of ``memory``.
    """
    pin = bool(gpus_per_run)
    if gpus_per_run and gpu_ids:
        n = len(gpu_ids) // gpus_per_run
        if n_slots is not None:
            n = min(n, n_slots)
        gpu_sets = [tuple(gpu_ids[i * gpus_per_run:(i + 1) * gpus_per_run]) for i in range(n)]
    else:
        n = n_slots or 1
        gpu_sets = [()] * n
    if n == 0:
        return []
    cpu_list = sorted(cpus)
    if len(cpu_list) >= n:
        per, extra = divmod(len(cpu_list), n)
        sets, start = [], 0
        for i in range(n):
            size = per + (1 if i < extra else 0)
            sets.append(cpu_list[start:start + size])
            start += size
    else:
        sets = [[cpu_list[i % len(cpu_list)]] for i in range(n)] if cpu_list else [[] for _ in range(n)]
    mem = min(run_memory, memory // n)
    return [Slot(host, i, gpu_sets[i], format_ids(sets[i]) if sets[i] else None, mem, pin) for i in range(n)]


def engine_resources(dc: Any) -> tuple[tuple[int, ...], int, bool]:
    """(CPU ids, memory in bytes, whether the engine can hand out GPUs) as the engine reports them."""
    info = dc.info()
    n = int(info.get("NCPU") or os.cpu_count() or 1)
    nvidia = "nvidia" in (info.get("Runtimes") or {})
    return tuple(range(n)), int(info.get("MemTotal") or 0), nvidia


_GPU_QUERY = ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"]


def _parse_gpu_indices(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip().isdigit())


def discover_gpus(dc: Any, host: Host, probe_image: str | None) -> tuple[str, ...]:
    """The GPU ids of the engine: the local ``nvidia-smi`` for a local engine, otherwise a short probe
    container (``nvidia-smi``, which the NVIDIA toolkit mounts into any image) on ``probe_image``.
    An engine without GPU support, or a failing probe, has none."""
    if host.local and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(_GPU_QUERY, capture_output=True, text=True, timeout=60, check=True).stdout
            return _parse_gpu_indices(out)
        except (OSError, subprocess.SubprocessError):
            return ()
    _, _, nvidia = engine_resources(dc)
    if not nvidia or probe_image is None:
        return ()
    from docker.types import DeviceRequest

    c = None
    try:
        c = dc.containers.create(
            probe_image, entrypoint=_GPU_QUERY[:1], command=_GPU_QUERY[1:], network_mode="none",
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu", "utility"]])],
            labels={"fmuia.submission": "1", "fmuia.probe": "gpu"},
        )
        c.start()
        c.wait(timeout=120)
        return _parse_gpu_indices(c.logs(stdout=True, stderr=False).decode("utf-8", "replace"))
    except Exception:
        return ()
    finally:
        if c is not None:
            try:
                c.remove(force=True)
            except Exception:
                pass


def hosts_from_paths(hosts_file: Path | None) -> list[Host]:
    """The hosts of a batch: those of ``hosts_file``, else the one local engine."""
    return read_hosts(hosts_file) if hosts_file is not None else [local_host()]
