"""Batch scoring on several slots and engines (issue 13).

Unit tests (no engine): the hosts file, slot planning, the container configuration of a slot, the safe
extraction of a pulled output, the image id of a tar, the resumable state. Engine tests (marked docker):
two private dockerd engines on this machine used as two hosts (tests/docker_engines.py): a batch spread
over both, one engine killed mid-batch, a rerun that redoes nothing, the same leaderboard as one engine.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from submission import hosts as H
from submission.batch import BatchOptions, BatchState, score_batch
from submission.engine import SubmissionError
from submission.runner import Limits, container_config
from submission.score import Entry
from submission.transfer import OutputTooLarge, safe_extract
from submission.worker import tar_image_id

# ---- hosts file --------------------------------------------------------------------------------------


def test_hosts_file_reads_every_column(tmp_path):
    f = tmp_path / "hosts.csv"
    f.write_text(
        "# workers\nurl,gpus,cpus,memory,data_path,slots\n"
        "unix:///var/run/docker.sock,0-3,0-7,64g,,\n"
        "ssh://scorer@gpu2,auto,,,/srv/test,\n"
        "tcp://10.0.0.7:2376,none,0-3,8g,,2\n"
    )
    a, b, c = H.read_hosts(f)
    assert (a.gpus, a.cpus, a.memory, a.data_path, a.slots, a.row) == (("0", "1", "2", "3"), tuple(range(8)), 64 << 30, None, None, 3)
    assert (b.url, b.gpus, b.cpus, b.memory, b.data_path) == ("ssh://scorer@gpu2", None, None, None, "/srv/test")
    assert (c.gpus, c.cpus, c.memory, c.slots) == ((), (0, 1, 2, 3), 8 << 30, 2)
    assert a.local and not b.local and not c.local


def test_hosts_file_reports_every_bad_row_with_its_line(tmp_path):
    f = tmp_path / "hosts.csv"
    f.write_text(
        "url,gpus,cpus,memory,data_path,slots\n"
        "unix:///ok.sock,,,,,\n"
        "myhost:2375,,,,,\n"          # line 3: no scheme
        "tcp://a:1,zero,,,,\n"        # line 4: bad gpus
        "tcp://b:1,,3-1,,,\n"         # line 5: backwards cpus
        "tcp://c:1,,,lots,,\n"        # line 6: bad memory
        "tcp://d:1,,,,relative/p,\n"  # line 7: data_path not absolute
        "tcp://e:1,,,,,0\n"           # line 8: slots < 1
        "unix:///ok.sock,,,,,\n"      # line 9: duplicate
    )
    with pytest.raises(SubmissionError) as ei:
        H.read_hosts(f)
    problems = ei.value.problems
    assert [p.where for p in problems] == [f"line {n}" for n in range(3, 10)]
    assert all(p.file == str(f) for p in problems)
    text = [p.message for p in problems]
    assert "expected unix://" in text[0] and text[1].startswith("gpus:") and "backwards" in text[2]
    assert text[3].startswith("memory:") and "absolute" in text[4] and text[5].startswith("slots:")
    assert "duplicate" in text[6]
    with pytest.raises(SubmissionError, match="`url` column"):
        (tmp_path / "h2.csv").write_text("host,gpus\nx,y\n")
        H.read_hosts(tmp_path / "h2.csv")


@pytest.mark.parametrize("text,ids", [("0", [0]), ("0-3", [0, 1, 2, 3]), ("5,0-1,1", [0, 1, 5]), (" 2 , 4-5", [2, 4, 5])])
def test_parse_and_format_ids(text, ids):
    assert H.parse_ids(text) == ids
    assert H.parse_ids(H.format_ids(ids)) == ids


def test_format_ids_compresses_runs():
    assert H.format_ids([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert H.parse_size("512m") == 512 << 20 and H.parse_size("1.5g") == 3 << 29 and H.parse_size("100") == 100


# ---- slots -----------------------------------------------------------------------------------------------

def test_gpu_slots_pin_consecutive_ids_and_split_cpus_and_memory():
    slots = H.plan_slots("h", gpu_ids=tuple("01234567"), cpus=tuple(range(32)), memory=256 << 30,
                         gpus_per_run=2, n_slots=None, run_memory=16 << 30)
    assert [s.gpu_ids for s in slots] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert [s.cpuset for s in slots] == ["0-7", "8-15", "16-23", "24-31"]
    assert {s.memory for s in slots} == {16 << 30}  # --memory fits in the 64g share
    assert all(s.pin_gpus for s in slots) and [s.index for s in slots] == [0, 1, 2, 3]


def test_slots_memory_capped_at_the_share_and_uneven_cpus():
    slots = H.plan_slots("h", gpu_ids=("0", "1", "2"), cpus=tuple(range(7)), memory=30 << 30,
                         gpus_per_run=1, n_slots=None, run_memory=16 << 30)
    assert [s.cpuset for s in slots] == ["0-2", "3-4", "5-6"]  # disjoint, sizes 3,2,2
    assert {s.memory for s in slots} == {10 << 30}
    # an odd GPU left over gets no slot; --slots caps the count
    assert len(H.plan_slots("h", gpu_ids=("0", "1", "2"), cpus=(0,), memory=1 << 40, gpus_per_run=2,
                            n_slots=None, run_memory=1)) == 1
    assert len(H.plan_slots("h", gpu_ids=tuple("0123"), cpus=(0,), memory=1 << 40, gpus_per_run=1,
                            n_slots=2, run_memory=1)) == 2


def test_cpu_slots_and_more_slots_than_cpus():
    cpu = H.plan_slots("h", gpu_ids=(), cpus=(0, 1), memory=8 << 30, gpus_per_run=1, n_slots=3, run_memory=1 << 30)
    assert [(s.gpu_ids, s.cpuset, s.pin_gpus) for s in cpu] == [((), "0", True), ((), "1", True), ((), "0", True)]
    plain = H.plan_slots("h", gpu_ids=(), cpus=(0, 1, 2, 3), memory=8 << 30, gpus_per_run=None, n_slots=None,
                         run_memory=1 << 30)
    assert len(plain) == 1 and plain[0].cpuset == "0-3" and not plain[0].pin_gpus


# ---- the container configuration of a slot (pure) ---------------------------------------------------------

def _mounts():
    from docker.types import Mount

    return [Mount("/input", "vol-in", type="volume", read_only=True), Mount("/output", "vol-out", type="volume")]


def test_container_config_pins_the_slot_and_keeps_every_limit():
    limits = Limits(time_limit=60, memory="8g", gpus="all", pids=99, tmp_size="1g", user="1000:1000", cpus=2)
    slot = H.Slot("h", 1, ("2", "3"), "8-15", 6 << 30, True)
    cfg = container_config(limits, slot, mounts=_mounts(), nvidia=True, labels={"fmuia.name": "a"})
    (req,) = cfg["device_requests"]
    assert req["DeviceIDs"] == ["2", "3"] and req["Capabilities"] == [["gpu"]] and req["Count"] == 0
    assert cfg["cpuset_cpus"] == "8-15"
    assert cfg["mem_limit"] == cfg["memswap_limit"] == 6 << 30  # the slot's share, no swap past it
    assert cfg["network_mode"] == "none" and cfg["network_disabled"] is True
    assert cfg["cap_drop"] == ["ALL"] and cfg["security_opt"] == ["no-new-privileges"]
    assert cfg["pids_limit"] == 99 and cfg["read_only"] is True and cfg["user"] == "1000:1000"
    assert cfg["tmpfs"]["/tmp"].startswith("rw,nosuid,nodev") and "size=1g" in cfg["tmpfs"]["/tmp"]
    assert cfg["nano_cpus"] == 2_000_000_000
    assert cfg["labels"] == {"fmuia.submission": "1", "fmuia.name": "a"}
    assert [(m["Target"], m["ReadOnly"]) for m in cfg["mounts"]] == [("/input", True), ("/output", False)]


def test_container_config_cpu_slot_and_no_slot():
    limits = Limits(memory="2g", gpus="all")
    cpu_slot = H.Slot("h", 0, (), "0-3", 1 << 30, True)  # a --gpus-per-run batch on a host without GPUs
    cfg = container_config(limits, cpu_slot, mounts=[], nvidia=True)
    assert cfg["device_requests"] is None and cfg["cpuset_cpus"] == "0-3" and cfg["mem_limit"] == 1 << 30
    free = H.Slot("h", 0, (), None, None, False)  # --gpus decides; no cpuset; --memory
    cfg = container_config(limits, free, mounts=[], nvidia=False)
    assert cfg["device_requests"][0]["Count"] == -1 and "cpuset_cpus" not in cfg and cfg["mem_limit"] == "2g"
    assert container_config(Limits(gpus="none"), None, mounts=[], nvidia=True)["device_requests"] is None


# ---- safe extraction of a pulled output ------------------------------------------------------------------

def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return buf.getvalue()


def _chunks(data: bytes, n: int = 1000):
    return (data[i:i + n] for i in range(0, len(data), n))


def test_safe_extract_keeps_files_and_folders_only(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = _tar([
        ("output", "dir", None), ("output/a.json", "file", b"[1]"), ("output/m", "dir", None),
        ("output/m/x.png", "file", b"png"), ("output/link", "sym", "/etc/passwd"),
        ("output/m/hard", "hard", "output/a.json"), ("output/f", "fifo", None),
        ("output/../escape.txt", "file", b"no"), ("/abs.txt", "file", b"no"), ("other/z", "file", b"no"),
        ("output/ldir", "sym", str(outside)), ("output/ldir/inside.txt", "file", b"no"),
        ("output/a.json/under", "file", b"no"),
    ])
    dest = tmp_path / "out"
    skipped = safe_extract(_chunks(data), dest, max_bytes=1 << 20, strip="output")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert files == ["a.json", "m", "m/x.png"]
    assert (dest / "a.json").read_bytes() == b"[1]" and (dest / "m" / "x.png").read_bytes() == b"png"
    assert skipped == sorted([
        "link (symlink)", "m/hard (hard link)", "f (special file)", "output/../escape.txt (unsafe name)",
        "/abs.txt (unsafe name)", "other/z (unsafe name)", "ldir (symlink)", "ldir/inside.txt (parent is not a folder)",
        "a.json/under (parent is not a folder)",
    ])
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_safe_extract_caps_the_size(tmp_path):
    data = _tar([("output", "dir", None)] + [(f"output/{i}.bin", "file", b"x" * 4000) for i in range(5)])
    with pytest.raises(OutputTooLarge):
        safe_extract(_chunks(data), tmp_path / "a", max_bytes=15000, strip="output")
    assert len(list((tmp_path / "a").iterdir())) <= 3  # it stopped at the cap
    assert len(safe_extract(_chunks(data), tmp_path / "b", max_bytes=20000, strip="output")) == 0
    assert sum(p.stat().st_size for p in (tmp_path / "b").iterdir()) == 20000


def test_tar_image_id_reads_the_config_digest(tmp_path):
    import gzip

    digest = "ab" * 32
    for layout, config in (("legacy", f"{digest}.json"), ("oci", f"blobs/sha256/{digest}")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            body = json.dumps([{"Config": config, "RepoTags": ["x:1"], "Layers": []}]).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        (tmp_path / f"{layout}.tar").write_bytes(buf.getvalue())
        (tmp_path / f"{layout}.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
        assert tar_image_id(tmp_path / f"{layout}.tar") == f"sha256:{digest}"
        assert tar_image_id(tmp_path / f"{layout}.tar.gz") == f"sha256:{digest}"
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    assert tar_image_id(tmp_path / "junk.tar") is None


# ---- state ----------------------------------------------------------------------------------------------

def test_state_resume_closes_in_flight_attempts_and_counts_host_failures(tmp_path):
    path = tmp_path / "state.json"
    st = BatchState(path, "b1")
    e = Entry("a", "img:1", None, 2)
    st.prepare(e, finished=None, retry=False)
    slot = H.Slot("unix:///x.sock", 0, ("0",), "0", 1 << 30, True)
    st.start("a", slot)
    st.end("a", "host down", "engine unreachable", "pending")
    st.start("a", slot)  # the coordinator dies here
    saved = json.loads(path.read_text())
    assert saved["submissions"]["a"]["status"] == "running" and len(saved["submissions"]["a"]["attempts"]) == 2
    assert saved["submissions"]["a"]["attempts"][0]["gpus"] == ["0"]
    st2 = BatchState(path, "b2")  # the rerun
    assert st2.data["runs"] == 2
    st2.prepare(e, finished=None, retry=False)
    rec = json.loads(path.read_text())["submissions"]["a"]
    assert rec["status"] == "pending" and [a["outcome"] for a in rec["attempts"]] == ["host down", "interrupted"]
    assert st2.host_failures("a") == 1
    st2.prepare(Entry("a", "img:2", None, 2), finished=None, retry=False)  # a new source: a fresh record
    assert json.loads(path.read_text())["submissions"]["a"]["attempts"] == []


def test_batch_options_refuse_bad_values():
    for kwargs in ({"max_attempts": 0}, {"slots": 0}, {"gpus_per_run": 0}, {"max_output": "huge"}):
        with pytest.raises(SubmissionError):
            BatchOptions(**kwargs)


# ---- connecting to remote engines: one clear reason per way it fails (no engine needed) -------------------

def test_tls_files_missing_is_named_before_any_connection(tmp_path, monkeypatch):
    from submission.worker import HostDown, HostSession, connect

    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    with pytest.raises(SubmissionError) as ei:
        connect("tcp://127.0.0.1:9")
    assert ei.value.message == (f"TLS for tcp://127.0.0.1:9: {tmp_path} has no ca.pem, cert.pem, key.pem "
                                "(DOCKER_CERT_PATH must hold ca.pem, cert.pem and key.pem)")
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(HostDown, match=r"has no cert.pem, key.pem \("):
        HostSession(H.Host("tcp://127.0.0.1:9"), "b").connect()
    # DOCKER_TLS_VERIFY="" is "off" (as the docker CLI reads it), and a unix socket never uses TLS
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "")
    monkeypatch.delenv("DOCKER_CERT_PATH")
    with pytest.raises(Exception) as ei:
        connect("unix:///nonexistent/docker.sock", timeout=2)
    assert not isinstance(ei.value, SubmissionError)


@pytest.mark.parametrize("raised,reason", [
    ("HTTPSConnectionPool(host='h', port=2376): Max retries exceeded with url: /version (Caused by SSLError("
     "SSLError(1, '[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)')))",
     "engine unreachable (TLS handshake failed: sslv3 alert bad certificate); check the TLS files in DOCKER_CERT_PATH"),
    ("HTTPSConnectionPool(host='h', port=2376): Max retries exceeded with url: /version (Caused by SSLError("
     "SSLEOFError(8, 'EOF occurred in violation of protocol (_ssl.c:2427)')))",
     "engine unreachable (TLS handshake failed: EOF occurred in violation of protocol (the engine closed the "
     "connection)); check the TLS files in DOCKER_CERT_PATH"),
    ('Error while fetching server API version: 400 Client Error for http://h:2376/version: Bad Request '
     '("Client sent an HTTP request to an HTTPS server.")',
     "engine unreachable (DockerException: Error while fetching server API version: 400 Client Error for "
     "http://h:2376/version: Bad Request (\"Client sent an HTTP request to an HTTPS server.\")); the engine wants "
     "TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"),
    ("Connection refused", "engine unreachable (DockerException: Connection refused)"),
])
def test_engine_unreachable_reasons_say_what_to_check(monkeypatch, raised, reason):
    import docker.errors

    import submission.worker as W

    def fail(url, timeout=3600):
        raise docker.errors.DockerException(raised)

    monkeypatch.setattr(W, "connect", fail)
    with pytest.raises(W.HostDown) as ei:
        W.HostSession(H.Host("tcp://h:2376"), "b").connect()
    assert str(ei.value).startswith(reason)
    if "check the TLS files" in reason:
        assert str(ei.value).endswith("(a client certificate that CA signed, extendedKeyUsage clientAuth)")
    else:
        assert "check the TLS files" not in str(ei.value)


def test_ssh_engine_without_paramiko_is_one_clear_reason(monkeypatch):
    import submission.worker as W

    real = W.importlib.util.find_spec
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name, *a: None if name == "paramiko" else real(name, *a))
    with pytest.raises(W.HostDown) as ei:
        W.HostSession(H.Host("ssh://scorer@gpu2"), "b").connect()
    assert str(ei.value) == ("ssh://scorer@gpu2: ssh:// engines need the paramiko package (pip install paramiko); "
                             "the docker SDK imports it even when it runs the ssh command")


_FAKE_SSH = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_SSH_ARGS"
printf '%s' "$FAKE_SSH_OUT"
printf '%s' "$FAKE_SSH_ERR" >&2
exit "$FAKE_SSH_RC"
"""
_DIAL = "docker version --format '{{.Server.APIVersion}}'"


@pytest.mark.parametrize("rc,out,err,reason", [
    (255, "", "Warning: Permanently added 'gpu2' (ED25519) to the list of known hosts.\r\n"
     "scorer@gpu2: Permission denied (publickey).\r\n",
     "ssh login failed (scorer@gpu2: Permission denied (publickey).); the coordinator must log in with a key, "
     "without a prompt (its ~/.ssh/config, key files or ssh-agent)"),
    (255, "", "ssh: connect to host gpu2 port 2222: Connection refused\n",
     "ssh login failed (ssh: connect to host gpu2 port 2222: Connection refused); the coordinator must"),
    (127, "", "bash: line 1: docker: command not found\n",
     "the host has no docker CLI for ssh:// (bash: line 1: docker: command not found); install docker there"),
    (1, "", "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: "
     "Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.47/version\": dial unix /var/run/docker.sock: connect: permission denied\n",
     "docker on the host cannot reach its engine (permission denied while trying to connect to the Docker daemon "
     "socket at unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.47/version\": dial unix "
     "/var/run/docker.sock: connect: permission denied); the ssh user must be in the docker group"),
    (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
     "docker on the host cannot reach its engine (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
     "Is the docker daemon running?)"),
    (3, "", "", "docker on the host cannot reach its engine (exit status 3)"),
    (0, "Client: 27.0\n", "", "docker on the host gave no API version (it printed 'Client: 27.0')"),
])
def test_ssh_probe_says_what_failed(tmp_path, monkeypatch, rc, out, err, reason):
    """The ssh login before an ssh:// engine is used (a fake ssh on PATH): each failure is one line, the
    host marked down with it; ssh's exit status 255 is its own failure, any other the remote command's."""
    import submission.worker as W

    (tmp_path / "ssh").write_text(_FAKE_SSH)
    (tmp_path / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    for k, v in {"FAKE_SSH_ARGS": tmp_path / "args", "FAKE_SSH_OUT": out, "FAKE_SSH_ERR": err, "FAKE_SSH_RC": rc}.items():
        monkeypatch.setenv(k, str(v))
    with pytest.raises(SubmissionError) as ei:
        W._ssh_probe("ssh://scorer@gpu2:2222")
    assert ei.value.message.startswith(reason) and "\n" not in ei.value.message
    with pytest.raises(W.HostDown) as hd:
        W.HostSession(H.Host("ssh://scorer@gpu2:2222"), "b").connect()
    assert str(hd.value) == ei.value.message
    assert (tmp_path / "args").read_text().splitlines() == [
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-l", "scorer", "-p", "2222", "--", "gpu2", _DIAL]


def test_ssh_probe_reads_the_api_version_and_the_client_speaks_at_most_its_own(tmp_path, monkeypatch):
    from docker.constants import DEFAULT_DOCKER_API_VERSION

    import submission.worker as W

    (tmp_path / "ssh").write_text(_FAKE_SSH)
    (tmp_path / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    env = {"FAKE_SSH_ARGS": tmp_path / "args", "FAKE_SSH_OUT": "1.41\n", "FAKE_SSH_ERR": "", "FAKE_SSH_RC": 0}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    assert W._ssh_probe("ssh://gpu2") == "1.41"
    assert (tmp_path / "args").read_text().splitlines() == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                                                             "--", "gpu2", _DIAL]
    assert W._client_version("1.41") == "1.41" and W._client_version("1.24") == "1.24"
    major, minor = DEFAULT_DOCKER_API_VERSION.split(".")
    assert W._client_version(f"{major}.{int(minor) + 7}") == DEFAULT_DOCKER_API_VERSION
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(SubmissionError, match=r"^ssh:// hosts need the ssh command on PATH \(openssh-client\)$"):
        W._ssh_probe("ssh://gpu2")


# ---- two real engines ------------------------------------------------------------------------------------

SLEEP_LIMIT = 5.0


@pytest.fixture(scope="module")
def engines():
    """Two private dockerd engines (their own data/exec roots, pidfiles, sockets and containerd)."""
    from docker_engines import Engine, available

    why = available()
    if why:
        from test_submission_docker import _loud_skip

        _loud_skip(f"cannot start extra engines ({why})")
    root = Path(tempfile.mkdtemp(prefix="fmuia-eng-", dir="/tmp"))
    started: list[Engine] = []
    try:
        for name in ("a", "b"):
            started.append(Engine(root / name).start())
        yield started
    finally:
        for eng in started:
            eng.stop()
        shutil.rmtree(root, ignore_errors=True)


def _degraded(pred: Path) -> None:
    """Flip every other classification prediction: a valid output that scores below the oracle."""
    for f in pred.rglob("*classification*.json"):
        rows = json.loads(f.read_text())
        for r in rows[::2]:
            k = len(r["predicted_probs"])
            r["predicted_class"] = (r["predicted_class"] + 1) % k
            r["predicted_probs"] = [1.0 if i == r["predicted_class"] else 0.0 for i in range(k)]
        f.write_text(json.dumps(rows))


@pytest.fixture(scope="module")
def batch_tars(tmp_path_factory, synth_split):
    """The test images, built on the main engine and saved to tars (what participants upload)."""
    from test_submission_docker import IMAGES, _build, _local_image, _loud_skip

    from fmuia.dataset import load_root
    from fmuia.formats import write_predictions
    from fmuia.oracle import oracle_predictions
    from submission.build import save_image
    from submission.engine import EngineError, client

    try:
        dc = client(timeout=900)
    except EngineError as exc:
        _loud_skip(exc.message)
    python = _local_image(dc, "fmuia-test-python:latest")
    tmp = tmp_path_factory.mktemp("batch")
    tags = {}
    for name in ("sleeper", "hog", "broken"):
        tags[name] = _build(dc, python, IMAGES / name, f"fmuia-test-{name}:latest")
    for name, degrade in (("oracle", False), ("fair", True)):
        ctx = tmp / f"ctx-{name}"
        shutil.copytree(IMAGES / "template", ctx)
        write_predictions(ctx / "predictions", oracle_predictions(load_root(synth_split / "labels")))
        if degrade:
            _degraded(ctx / "predictions")
        tags[name] = _build(dc, python, ctx, f"fmuia-test-batch-{name}:latest")
    tars = {}
    for name, tag in tags.items():
        tars[name] = save_image(tag, tmp / "subs" / f"{name}.tar", docker_client=dc)
    for name in ("oracle", "fair"):
        dc.images.remove(tags[name])
    return tars


def _manifest(path: Path, tars: dict[str, Path]) -> Path:
    rows = [("sleeper-1", "sleeper"), ("sleeper-2", "sleeper"), ("oracle", "oracle"), ("fair", "fair"),
            ("broken", "broken"), ("hog", "hog"), ("fair-again", "fair")]
    path.write_text("name,image,tar\n" + "".join(f"{n},,{tars[t]}\n" for n, t in rows))
    return path


LIMITS = Limits(time_limit=SLEEP_LIMIT, memory="160m", gpus="none", tmp_size="16m", pids=128)


def _board(board: Path) -> dict:
    lb = json.loads((board / "leaderboard.json").read_text())
    return {k: v for k, v in lb.items() if k not in ("created_at", "generated_at", "files")}


class _Watcher:
    """Polls the engines during a batch: records the HostConfig and mounts of every submission container,
    and kills the engine ``victim`` 1 s after it is seen running a sleeper (an engine gone mid-run)."""

    def __init__(self, engines, victim=None):
        self.engines = engines
        self.victim = victim
        self.killed_during: str | None = None
        self.seen: dict[str, tuple[str, dict, list]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            for eng in self.engines:
                if eng.killed:
                    continue
                try:
                    for c in eng.client(timeout=5).containers.list(all=True, filters={"label": "fmuia.submission"}):
                        self.seen.setdefault(c.id, (eng.url, c.attrs["HostConfig"], c.attrs["Mounts"]))
                        name = c.labels.get("fmuia.name", "")
                        if eng is self.victim and self.killed_during is None and name.startswith("sleeper") \
                                and c.status == "running":
                            self.killed_during = name
                            threading.Timer(1.0, eng.kill).start()
                except Exception:
                    pass
            time.sleep(0.1)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.mark.docker
@pytest.mark.slow
def test_two_engines_one_killed_mid_batch(engines, batch_tars, synth_split, tmp_path, capsys):
    a, b = engines
    manifest = _manifest(tmp_path / "manifest.csv", batch_tars)
    inp, labels = synth_split / "test", synth_split / "labels"

    # one engine (A, 2 slots): the reference leaderboard and wall time
    one = tmp_path / "hosts-one.csv"
    one.write_text(f"url,gpus,cpus,memory,data_path,slots\n{a.url},none,,,{inp},2\n")
    ref = score_batch(manifest, inp, labels, tmp_path / "board-one", limits=LIMITS, n_bootstrap=20,
                      options=BatchOptions(hosts=H.read_hosts(one), progress=False))
    assert not ref["pending"]

    # two engines, 2 slots each; B (listed first, so its slots take the first submissions: the sleepers)
    # gets the test set through put_archive into a volume, A has it at a declared path. B is killed
    # 1 s after a sleeper is seen running on it.
    two = tmp_path / "hosts-two.csv"
    two.write_text(f"url,gpus,cpus,memory,data_path,slots\n{b.url},none,,,,2\n{a.url},none,,,{inp},2\n")
    board = tmp_path / "board-two"
    with _Watcher(engines, victim=b) as watch:
        out = score_batch(manifest, inp, labels, board, limits=LIMITS, n_bootstrap=20,
                          options=BatchOptions(hosts=H.read_hosts(two), progress=False))
    assert b.killed and not out["pending"]
    state = json.loads((board / "state.json").read_text())
    assert state["hosts"][b.url]["status"] == "down" and state["hosts"][a.url]["status"] == "up"
    subs = state["submissions"]
    cut = [n for n, s in subs.items() if any(x["host"] == b.url and x["outcome"] == "host down" for x in s["attempts"])]
    assert watch.killed_during in cut
    for name in cut:  # every submission B lost finished on A
        last = subs[name]["attempts"][-1]
        assert last["host"] == a.url and last["outcome"] in ("scored", "failed")
    assert all(s["attempts"][-1]["host"] == a.url or s["attempts"][-1]["outcome"] != "host down" for s in subs.values())
    ran_on_b = {n for n, s in subs.items() if any(x["host"] == b.url for x in s["attempts"])}
    assert ran_on_b, "nothing was spread to B"

    st = out["submissions"]
    assert {n for n, s in st.items() if s["status"] == "scored"} == {"oracle", "fair", "fair-again"}
    assert "timed out" in st["sleeper-1"]["reason"] and "timed out" in st["sleeper-2"]["reason"]
    assert st["broken"]["reason"].startswith("exit code 3") and st["hog"]["reason"].startswith("killed: memory limit")
    assert _board(board) == _board(tmp_path / "board-one")  # the same leaderboard as one engine
    assert _board(board)["submissions"][0] == "oracle"

    # the containers the runner created: the slot's CPU set and memory, every limit, the mounts
    assert watch.seen
    for url, hc, mounts in watch.seen.values():
        assert hc["CpusetCpus"] in ("0", "1") and hc["Memory"] == hc["MemorySwap"] == 160 << 20
        assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] and hc["CapDrop"] == ["ALL"]
        assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["PidsLimit"] == 128
        by_target = {m["Destination"]: m for m in mounts}
        assert by_target["/input"]["RW"] is False and by_target["/output"]["Type"] == "volume"
        assert by_target["/input"]["Type"] == ("bind" if url == a.url else "volume")
    assert {url for url, _, _ in watch.seen.values()} == {a.url, b.url}

    # nothing outlives the batch on the live engine: containers, volumes, loaded images
    dca = a.client()
    assert dca.containers.list(all=True) == [] and dca.volumes.list() == [] and dca.images.list() == []

    # rerun: every submission is finished, nothing is redone (B is still dead: not even contacted)
    before = {n: json.loads((board / "submissions" / n / "state.json").read_text()) for n in st}
    again = score_batch(manifest, inp, labels, board, limits=LIMITS, n_bootstrap=20,
                        options=BatchOptions(hosts=H.read_hosts(two), progress=False))
    assert again["submissions"] == before
    assert json.loads((board / "state.json").read_text())["submissions"] == subs
    with capsys.disabled():
        print(f"\n[batch] one engine (2 slots): {ref['seconds']:.1f} s; two engines (2+2 slots, one killed): "
              f"{out['seconds']:.1f} s")


@pytest.mark.docker
@pytest.mark.slow
def test_gpu_slots_on_the_engine(engines, batch_tars, synth_split, tmp_path):
    """No GPU here: the GPU pinning is checked in the configuration the engine stores for the
    containers the runner creates; starting them fails, and that is recorded, not raised."""
    from docker.types import Mount

    a = engines[0]
    if a.killed:
        a.stop()
        a.start()
    dca = a.client()
    hosts = tmp_path / "hosts.csv"
    hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{a.url},0-3,0-1,1g,{synth_split / 'test'},\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"name,image,tar\nbroken,,{batch_tars['broken']}\n")
    out = score_batch(manifest, synth_split / "test", synth_split / "labels", tmp_path / "board", limits=LIMITS,
                      n_bootstrap=0, options=BatchOptions(hosts=H.read_hosts(hosts), gpus_per_run=2, progress=False,
                                                          keep_images=True))
    rec = json.loads((tmp_path / "board" / "state.json").read_text())
    assert [s["gpus"] for s in rec["hosts"][a.url]["slots"]] == [["0", "1"], ["2", "3"]]
    assert [s["cpuset"] for s in rec["hosts"][a.url]["slots"]] == ["0", "1"]
    st = out["submissions"]["broken"]
    assert st["status"] == "failed" and "could not start the container" in st["reason"]  # no GPU driver here
    assert dca.containers.list(all=True) == [] and dca.volumes.list() == []
    (image,) = [i.id for i in dca.images.list()]  # kept (--keep-images)

    slots = H.plan_slots(a.url, gpu_ids=("0", "1", "2", "3"), cpus=(0, 1), memory=1 << 30, gpus_per_run=2,
                         n_slots=None, run_memory=256 << 20)
    for slot, gpus, cpus in zip(slots, (["0", "1"], ["2", "3"]), ("0", "1"), strict=True):
        cfg = container_config(LIMITS, slot, mounts=[Mount("/input", str(synth_split / "test"), type="bind", read_only=True)],
                               nvidia=True)
        c = dca.containers.create(image, **cfg)
        try:
            hc = c.attrs["HostConfig"]
            (req,) = hc["DeviceRequests"]
            assert req["DeviceIDs"] == gpus and req["Capabilities"] == [["gpu"]]
            assert hc["CpusetCpus"] == cpus and hc["Memory"] == hc["MemorySwap"] == 256 << 20
            assert hc["ReadonlyRootfs"] and hc["NetworkMode"] == "none" and hc["CapDrop"] == ["ALL"]
        finally:
            c.remove(force=True)
    dca.images.remove(image, force=True)
    assert dca.containers.list(all=True) == [] and dca.images.list() == []


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_kills_running_containers_and_resumes(engines, batch_tars, synth_split, tmp_path):
    """SIGINT to `fmuia submission score`: no new start, the running containers killed and removed,
    exit 130, a state that the same command resumes (the interrupted attempts kept)."""
    import signal
    import subprocess
    import sys

    a = engines[0]
    if a.killed:
        a.stop()
        a.start()
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,image,tar\n" + "".join(f"s{i},,{batch_tars['sleeper']}\n" for i in range(3)))
    hosts = tmp_path / "hosts.csv"
    hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{a.url},none,,,,2\n")
    board = tmp_path / "board"
    cmd = [sys.executable, "-m", "fmuia", "submission", "score", str(manifest), "--input", str(synth_split / "test"),
           "--labels", str(synth_split / "labels"), "--out", str(board), "--hosts", str(hosts), "--gpus", "none",
           "--memory", "128m", "--tmp-size", "16m", "--bootstrap", "0", "--progress"]
    proc = subprocess.Popen([*cmd, "--time-limit", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dca = a.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = dca.containers.list(filters={"label": "fmuia.submission", "status": "running"})
        if len(running) == 2:
            break
        time.sleep(0.2)
    assert len(running) == 2, proc.communicate(timeout=60)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert time.monotonic() - t0 < 30  # killed, not waited for (the sleepers sleep an hour)
    assert "interrupted: run the same command again to resume" in stderr
    assert "submissions:" in stderr  # the live view (tqdm) was drawn
    assert dca.containers.list(all=True) == [] and dca.volumes.list() == [] and dca.images.list() == []
    rec = json.loads((board / "state.json").read_text())["submissions"]
    assert [len(rec[n]["attempts"]) for n in ("s0", "s1", "s2")] == [1, 1, 0]  # s2 never started
    assert {rec[n]["attempts"][0]["outcome"] for n in ("s0", "s1")} == {"interrupted"}
    assert all(rec[n]["status"] == "pending" for n in rec)

    again = subprocess.run([*cmd, "--time-limit", "2", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "0 scored, 3 failed" in again.stdout
    rec = json.loads((board / "state.json").read_text())["submissions"]
    assert [[x["outcome"] for x in rec[n]["attempts"]] for n in ("s0", "s1", "s2")] == [
        ["interrupted", "failed"], ["interrupted", "failed"], ["failed"]]
    assert all("timed out" in rec[n]["attempts"][-1]["reason"] for n in rec)


# ---- the scheduler, with fake engines -----------------------------------------------------------------

class _FakeSession:
    """Stands in for submission.worker.HostSession: hosts whose URL contains "bad" fail every run."""

    runs: list[tuple[str, str]] = []
    made: list[_FakeSession] = []

    def __init__(self, host, batch_id, source_client=None, client=None):
        self.host, self.url, self.batch_id = host, host.url, batch_id
        self.client = client
        self.plans: list[dict] = []
        _FakeSession.made.append(self)
        self.down = None
        self.loaded: list[str] = []
        self.data_volume = None
        self.dc = object()

    def connect(self):
        if "unreachable" in self.url:
            from submission.worker import HostDown

            raise HostDown("engine unreachable (refused)")

    def plan(self, **kw):
        self.plans.append(kw)
        return [H.Slot(self.url, 0, (), "0", 1 << 30, False)]

    def mark_down(self, reason):
        self.down = self.down or reason

    def ensure_image(self, source, tar, image, expected):
        return "sha256:" + "0" * 64

    def input_mount(self, *a, **k):
        return None, None

    def run(self, slot, image_id, name, attempt, mount, limits, sub_dir, **kw):
        from submission.runner import FAILED, RunResult
        from submission.worker import HostDown

        _FakeSession.runs.append((name, self.url))
        if "bad" in self.url:
            time.sleep(0.05)
            raise HostDown("ConnectionError: engine gone")
        return RunResult(image_id, FAILED, "exit code 1", 1, False, 0.01, str(sub_dir / "output"), str(sub_dir / "output.log"))

    def kill_running(self):
        pass

    def cleanup(self, **kw):
        return []


def _fake_batch(tmp_path, monkeypatch, urls, max_attempts, n=3):
    import submission.batch as batch

    _FakeSession.runs, _FakeSession.made = [], []
    monkeypatch.setattr(batch, "HostSession", _FakeSession)
    monkeypatch.setattr(batch, "input_digest", lambda p: "d")
    m = tmp_path / "m.csv"
    m.write_text("name,image\n" + "".join(f"s{i},img:{i}\n" for i in range(n)))
    (tmp_path / "in").mkdir(exist_ok=True)
    hosts = [H.Host(u) for u in urls]
    return score_batch(m, tmp_path / "in", tmp_path / "in", tmp_path / "board", n_bootstrap=0,
                       options=BatchOptions(hosts=hosts, max_attempts=max_attempts, progress=False))


def test_scheduler_moves_work_off_a_failing_host(tmp_path, monkeypatch):
    out = _fake_batch(tmp_path, monkeypatch, ["unix:///bad.sock", "unix:///good.sock"], max_attempts=3)
    assert not out["pending"]
    assert {n: s["status"] for n, s in out["submissions"].items()} == {"s0": "failed", "s1": "failed", "s2": "failed"}
    assert all(s["reason"] == "exit code 1" and s["host"] == "unix:///good.sock" for s in out["submissions"].values())
    bad_runs = [n for n, u in _FakeSession.runs if u == "unix:///bad.sock"]
    assert len(bad_runs) == 1  # the bad host is used once, then marked down
    state = json.loads((tmp_path / "board" / "state.json").read_text())
    assert state["hosts"]["unix:///bad.sock"]["status"] == "down"
    first = state["submissions"][bad_runs[0]]["attempts"]
    assert [(a["host"], a["outcome"]) for a in first] == [("unix:///bad.sock", "host down"), ("unix:///good.sock", "failed")]


def test_scheduler_gives_up_after_max_attempts_and_leaves_the_rest_pending(tmp_path, monkeypatch):
    # two failing hosts of one slot each: each takes one submission, loses it and goes down
    out = _fake_batch(tmp_path, monkeypatch, ["unix:///bad1.sock", "unix:///bad2.sock", "unix:///unreachable.sock"],
                      max_attempts=1)
    st = out["submissions"]
    gave_up = sorted(n for n, s in st.items() if s["status"] == "failed")
    assert gave_up == sorted(n for n, _ in _FakeSession.runs) and len(gave_up) == 2
    assert all(st[n]["reason"].startswith("gave up after 1 attempt(s) cut short by failing hosts") for n in gave_up)
    # no host left: the third waits for the next run
    assert out["pending"] == sorted(set(st) - set(gave_up))
    assert st[out["pending"][0]]["reason"] == "not finished"
    state = json.loads((tmp_path / "board" / "state.json").read_text())
    assert state["hosts"]["unix:///unreachable.sock"] == {"status": "down", "reason": "engine unreachable (refused)", "slots": []}
    assert state["submissions"][out["pending"][0]] == {"source": f"img:{out['pending'][0][1:]}", "attempts": [], "status": "pending"}
    rows = (tmp_path / "board" / "submissions.csv").read_text().splitlines()
    assert sum(",pending," in r for r in rows) == 1
    # the rerun on a good host runs exactly the pending one (the given-up ones are failed: skipped)
    again = _fake_batch(tmp_path, monkeypatch, ["unix:///good.sock"], max_attempts=1)
    assert not again["pending"] and _FakeSession.runs == [(out["pending"][0], "unix:///good.sock")]
    # with two attempts allowed, one failing host then a good one: nobody gives up
    tmp2 = tmp_path / "two"
    tmp2.mkdir()
    out = _fake_batch(tmp2, monkeypatch, ["unix:///bad1.sock", "unix:///good.sock"], max_attempts=2, n=4)
    assert not out["pending"] and {s["reason"] for s in out["submissions"].values()} == {"exit code 1"}


# ---- a tcp:// engine with TLS (client certificates through DOCKER_TLS_VERIFY / DOCKER_CERT_PATH) ------------

def _loud_tls_skip(msg: str) -> None:
    from test_submission_docker import _loud_skip

    _loud_skip(msg, "TLS ENGINE UNAVAILABLE, tcp:// TLS tests")


@pytest.fixture(scope="module")
def tls_engine():
    """A private dockerd on tcp://127.0.0.1:<free port> with --tlsverify; certificates made with openssl."""
    from docker_engines import Engine, available, make_certs

    why = available() or (None if shutil.which("openssl") else "no openssl on PATH")
    if why:
        _loud_tls_skip(why)
    root = Path(tempfile.mkdtemp(prefix="fmuia-tls-", dir="/tmp"))
    eng = None
    try:
        certs = make_certs(root / "certs")
        eng = Engine(root / "engine", tls=certs).start()
        yield eng
    finally:
        if eng is not None:
            eng.stop()
        shutil.rmtree(root, ignore_errors=True)


def _score_cli(tmp_path, manifest: Path, hosts: Path, board: Path, synth_split, env: dict, time_limit: int = 60):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fmuia", "submission", "score", str(manifest), "--input", str(synth_split / "test"),
           "--labels", str(synth_split / "labels"), "--out", str(board), "--hosts", str(hosts), "--gpus", "none",
           "--memory", "160m", "--tmp-size", "16m", "--time-limit", str(time_limit), "--bootstrap", "20", "--no-progress"]
    clean = {k: v for k, v in os.environ.items() if k not in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_HOST")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**clean, **env})


@pytest.mark.docker
@pytest.mark.slow
def test_tls_tcp_engine_scores_a_batch(tls_engine, batch_tars, synth_split, tmp_path):
    """A hosts-file row tcp://127.0.0.1:PORT, the client certificate from DOCKER_CERT_PATH (the test set
    copied into a volume, the outputs pulled back over TLS); REQUESTS_CA_BUNDLE pointing elsewhere (as on
    this machine) must not replace the CA."""
    url = tls_engine.url
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,image,tar\n" + "".join(f"{n},,{batch_tars[n]}\n" for n in ("oracle", "fair", "broken")))
    hosts = tmp_path / "hosts.csv"
    hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{url},none,,,,2\n")
    board = tmp_path / "board"
    certs = tls_engine.tls / "client"
    proc = _score_cli(tmp_path, manifest, hosts, board, synth_split,
                      {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs),
                       "REQUESTS_CA_BUNDLE": str(tls_engine.tls / "other-ca.pem")})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "2 scored, 1 failed" in proc.stdout and f"{url}: up, 2 slot(s)" in proc.stdout
    state = json.loads((board / "state.json").read_text())
    assert state["hosts"][url]["status"] == "up" and state["hosts"][url]["data_volume"].startswith("fmuia-data-")
    subs = state["submissions"]
    assert {n: [(a["host"], a["outcome"]) for a in s["attempts"]] for n, s in subs.items()} == {
        "oracle": [(url, "scored")], "fair": [(url, "scored")], "broken": [(url, "failed")]}
    lb = json.loads((board / "leaderboard.json").read_text())
    assert lb["submissions"] == ["oracle", "fair"]
    broken = json.loads((board / "submissions" / "broken" / "state.json").read_text())
    assert broken["reason"].startswith("exit code 3")
    assert sorted(p.name for p in (board / "submissions" / "oracle" / "output").iterdir())  # pulled over TLS
    dc = tls_engine.client()
    assert dc.containers.list(all=True) == [] and dc.volumes.list() == [] and dc.images.list() == []


@pytest.mark.docker
@pytest.mark.slow
def test_tls_tcp_engine_with_a_wrong_or_missing_client_certificate(tls_engine, tmp_path, synth_split):
    """A client certificate the engine's CA did not sign, a cert folder without the files, no TLS at all:
    each is one line naming the host and what to check, exit 1, no traceback; the engine is left as it was."""
    url = tls_engine.url
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,image\na,fmuia-never-pulled:1\n")
    hosts = tmp_path / "hosts.csv"
    hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{url},none,,,,1\n")
    empty = tmp_path / "no-certs"
    empty.mkdir()
    cases = {
        "rogue": ({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tls_engine.tls / "rogue")},
                  ["engine unreachable (TLS handshake failed: ", "check the TLS files in DOCKER_CERT_PATH"]),
        "missing": ({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(empty)},
                    [f"TLS for {url}: {empty} has no ca.pem, cert.pem, key.pem"]),
        "plain": ({}, ["the engine wants TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"]),
    }
    for case, (env, needles) in cases.items():
        board = tmp_path / f"board-{case}"
        proc = _score_cli(tmp_path, manifest, hosts, board, synth_split, env)
        assert proc.returncode == 1, (case, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, (case, proc.stderr)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(err) == 1 and f"no slot to run submissions on ({url}: " in err[0], (case, proc.stderr)
        assert all(n in err[0] for n in needles), (case, err[0])
        state = json.loads((board / "state.json").read_text())
        assert state["hosts"][url]["status"] == "down" and state["hosts"][url]["slots"] == []
        assert state["submissions"]["a"]["attempts"] == []
    dc = tls_engine.client()
    assert dc.containers.list(all=True) == [] and dc.volumes.list() == [] and dc.images.list() == []


@pytest.mark.docker
@pytest.mark.slow
def test_score_manifest_runs_one_slot_on_the_given_engine(engines, batch_tars, synth_split, tmp_path, monkeypatch):
    """The library's simple call: score_batch with the given client as its one host and one slot (the input
    bind-mounted read-only, as a local engine sees our files); the same layout and leaderboard."""
    from submission.score import score_manifest

    a = engines[0]
    if a.killed:
        a.stop()
        a.start()
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,image,tar\n" + "".join(f"{n},,{batch_tars[n]}\n" for n in ("broken", "fair", "oracle")))
    board = tmp_path / "board"
    with _Watcher([a]) as watch:
        out = score_manifest(manifest, synth_split / "test", synth_split / "labels", board, limits=LIMITS,
                             n_bootstrap=20, docker_client=a.client())
    assert set(out) == {"submissions", "leaderboard"}
    st = out["submissions"]
    assert list(st) == ["broken", "fair", "oracle"]
    assert [st[n]["status"] for n in st] == ["failed", "scored", "scored"] and st["broken"]["reason"].startswith("exit code 3")
    assert out["leaderboard"]["ranked"] == ["oracle", "fair"] and list(out["leaderboard"]["failed"]) == ["broken"]
    state = json.loads((board / "state.json").read_text())
    assert [s["index"] for s in state["hosts"][H.LOCAL_URL]["slots"]] == [0]
    assert {a_["slot"] for s in state["submissions"].values() for a_ in s["attempts"]} == {0}
    assert len(watch.seen) == 3
    for _, _, mounts in watch.seen.values():
        by_target = {m["Destination"]: m for m in mounts}
        assert by_target["/input"]["Type"] == "bind" and by_target["/input"]["RW"] is False
        assert by_target["/input"]["Source"] == str((synth_split / "test").resolve())
    dca = a.client()
    assert dca.containers.list(all=True) == [] and dca.volumes.list() == [] and dca.images.list() == []


# ---- an ssh:// engine (a private sshd whose sessions reach a private engine) ---------------------------------

def _loud_ssh_skip(msg: str) -> None:
    from test_submission_docker import _loud_skip

    _loud_skip(msg, "SSH ENGINE UNAVAILABLE, ssh:// tests")


@pytest.fixture(scope="module")
def ssh_engine():
    """A private dockerd (unix socket) behind a private sshd on 127.0.0.1:<free port> (see
    docker_engines.SSHServer): yields (sshd, engine)."""
    from docker_engines import Engine, SSHServer, available, ssh_missing

    why = available()
    if why is None and ssh_missing():
        why = (f"missing {ssh_missing()}: apt-get install -y --no-install-recommends openssh-server "
               "openssh-client, pip install 'paramiko>=3.4', and the docker CLI")
    if why:
        _loud_ssh_skip(why)
    root = Path(tempfile.mkdtemp(prefix="fmuia-ssh-", dir="/tmp"))
    eng = srv = None
    try:
        eng = Engine(root / "engine").start()
        srv = SSHServer(root / "sshd", eng.url).start()
        yield srv, eng
    finally:
        if srv is not None:
            srv.stop()
        if eng is not None:
            eng.stop()
        shutil.rmtree(root, ignore_errors=True)


def _ssh_clients_of(srv) -> list[int]:
    """Processes still running the ssh client with the test's config (the SDK's, the probe's)."""
    marker = str(srv.root / "ssh_config").encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _no_ssh_left(srv, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (srv.sessions() or _ssh_clients_of(srv)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.sessions() == [] and _ssh_clients_of(srv) == []


@pytest.mark.docker
@pytest.mark.slow
def test_ssh_engine_scores_a_batch(ssh_engine, batch_tars, synth_split, tmp_path):
    """A hosts-file row ssh://root@127.0.0.1:PORT: the SDK runs the ssh command (found first on PATH, with
    the test's key and known_hosts), the far side's `docker system dial-stdio` reaches the engine; the test
    set goes into a volume and the outputs come back over ssh; nothing is left on the engine or running."""
    srv, eng = ssh_engine
    url = srv.url
    manifest = tmp_path / "m.csv"
    names = ("sleeper", "oracle", "fair", "broken")
    manifest.write_text("name,image,tar\n" + "".join(f"{n},,{batch_tars[n]}\n" for n in names))
    hosts = tmp_path / "hosts.csv"
    hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{url},none,,,,2\n")
    board = tmp_path / "board"
    t0 = time.monotonic()
    proc = _score_cli(tmp_path, manifest, hosts, board, synth_split, srv.client_env(), time_limit=8)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, srv.log_tail())
    assert time.monotonic() - t0 < 200  # the sleeper (an hour) was killed at its time limit
    assert "2 scored, 2 failed" in proc.stdout and f"{url}: up, 2 slot(s)" in proc.stdout
    assert "Traceback" not in proc.stderr and "Permission denied" not in proc.stderr
    state = json.loads((board / "state.json").read_text())
    assert state["hosts"][url]["status"] == "up" and state["hosts"][url]["data_volume"].startswith("fmuia-data-")
    subs = state["submissions"]
    assert {n: [(a["host"], a["outcome"]) for a in s["attempts"]] for n, s in subs.items()} == {
        "sleeper": [(url, "failed")], "oracle": [(url, "scored")], "fair": [(url, "scored")], "broken": [(url, "failed")]}
    lb = json.loads((board / "leaderboard.json").read_text())
    assert lb["submissions"] == ["oracle", "fair"]
    broken = json.loads((board / "submissions" / "broken" / "state.json").read_text())
    assert broken["reason"].startswith("exit code 3")
    sleeper = json.loads((board / "submissions" / "sleeper" / "state.json").read_text())
    assert "timed out" in sleeper["reason"]
    assert sorted(p.name for p in (board / "submissions" / "oracle" / "output").iterdir())  # pulled over ssh
    log = (srv.root / "sshd.log").read_text()
    assert "Accepted publickey for root from 127.0.0.1" in log  # it really went through our sshd
    _no_ssh_left(srv)
    dc = eng.client()
    assert dc.containers.list(all=True) == [] and dc.volumes.list() == [] and dc.images.list() == []


@pytest.mark.docker
@pytest.mark.slow
def test_ssh_engine_refused_key_or_dead_port_is_one_line(ssh_engine, tmp_path, synth_split):
    """A key the sshd does not list, a port nothing listens on: the host is down with what ssh said, one
    line, exit 1, no traceback and no ssh prompt; the engine is left as it was."""
    from docker_engines import free_port

    srv, eng = ssh_engine
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,image\na,fmuia-never-pulled:1\n")
    dead = f"ssh://root@127.0.0.1:{free_port()}"
    cases = {
        "refused": (srv.url, srv.other_key, "ssh login failed (root@127.0.0.1: Permission denied (publickey).)"),
        "dead": (dead, srv.client_key, f"ssh login failed (ssh: connect to host 127.0.0.1 port {dead.rsplit(':', 1)[1]}: "
                                       "Connection refused)"),
    }
    try:
        for case, (url, key, needle) in cases.items():
            srv.set_client_key(key)
            hosts = tmp_path / f"hosts-{case}.csv"
            hosts.write_text(f"url,gpus,cpus,memory,data_path,slots\n{url},none,,,,1\n")
            board = tmp_path / f"board-{case}"
            proc = _score_cli(tmp_path, manifest, hosts, board, synth_split, srv.client_env())
            assert proc.returncode == 1, (case, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr + proc.stdout, (case, proc.stderr)
            err = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(err) == 1 and f"no slot to run submissions on ({url}: {needle}; " in err[0], (case, proc.stderr)
            state = json.loads((board / "state.json").read_text())
            assert state["hosts"][url]["status"] == "down" and state["hosts"][url]["slots"] == []
            assert state["submissions"]["a"]["attempts"] == []
    finally:
        srv.set_client_key(srv.client_key)
    assert "Failed publickey for root from 127.0.0.1" in (srv.root / "sshd.log").read_text()
    _no_ssh_left(srv)
    dc = eng.client()
    assert dc.containers.list(all=True) == [] and dc.volumes.list() == [] and dc.images.list() == []
