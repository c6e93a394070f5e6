"""Extra Docker engines on this machine, for the multi-host batch tests and benchmarks/bench_batch.py.

Each engine is its own ``dockerd`` with its own ``--data-root``, ``--exec-root``, ``--pidfile`` and unix
socket under a scratch folder, and its own managed containerd (dockerd starts one under its exec-root, so
two engines never share a containerd socket). No iptables, NAT or bridge: everything runs with
``--network none``. With ``tls`` (the folder :func:`make_certs` fills) the engine listens on
``tcp://127.0.0.1:<free port>`` with ``--tlsverify`` instead of a socket. :meth:`Engine.kill` SIGKILLs the dockerd (an engine that goes away mid-run);
:meth:`Engine.stop` restarts a killed engine once so that it kills and forgets the containers it left,
then stops it with SIGTERM and removes its folders: nothing outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class Engine:
    """One private ``dockerd`` (root only)."""

    def __init__(self, root: str | os.PathLike, tls: str | os.PathLike | None = None):
        self.root = Path(root)
        self.sock = self.root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.tls = Path(tls) if tls is not None else None
        if self.tls is not None:
            self.url = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.killed = False

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        t = self.tls
        return ["--tlsverify", "--tlscacert", str(t / "ca.pem"), "--tlscert", str(t / "server-cert.pem"),
                "--tlskey", str(t / "server-key.pem")]

    def _tls_config(self):
        """The client side of a TLS engine: the good client certificate (``tls/client``)."""
        if self.tls is None:
            return None
        from docker.tls import TLSConfig

        c = self.tls / "client"
        return TLSConfig(client_cert=(str(c / "cert.pem"), str(c / "key.pem")), ca_cert=str(c / "ca.pem"), verify=True)

    def start(self, timeout: float = 60) -> Engine:
        """Start dockerd and wait until it answers; raises RuntimeError with its log when it does not."""
        for d in ("data", "exec"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "docker.pid"), "-H", self.url, *self._tls_args(), "--iptables=false",
             "--ip-masq=false", "--bridge=none", "--shutdown-timeout", "2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ping():
                self.killed = False
                return self
            time.sleep(0.25)
        raise RuntimeError(f"dockerd at {self.url} did not come up:\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            self.client(timeout=5).ping()
            return True
        except Exception:
            return False

    def client(self, timeout: int = 600):
        import docker

        if self.tls is not None:  # REQUESTS_CA_BUNDLE would replace our CA: see submission.worker._tls_client
            from submission.worker import _tls_client

            return _tls_client({"base_url": self.url, "timeout": timeout, "tls": self._tls_config()})
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the engine (its containerd and containers stay, as after a crash, until :meth:`stop`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.killed = True

    def _containerd_pids(self) -> list[int]:
        marker = str(self.root / "exec")
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if cmd.startswith("containerd ") and marker in cmd:
                    pids.append(int(d.name))
        return pids

    def stop(self) -> None:
        """Stop the engine for good and remove its folders (after a kill: restart it first, so that it
        kills the containers it left running and unmounts their filesystems)."""
        if self.killed:
            try:
                self.start()
            except RuntimeError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for pid in self._containerd_pids():  # a containerd left by a killed engine that did not restart
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["umount", "-R", "-l", str(self.root / "data")], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self.proc = None


def available() -> str | None:
    """Why extra engines cannot be started here (``None`` when they can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("dockerd") is None:
        return "no dockerd on PATH"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", cwd=folder)


def _signed(folder: Path, ca: str, out: str, cn: str, ext: str) -> None:
    (folder / f"{out}.ext").write_text(ext)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", f"{out}-key.pem", "-out", f"{out}.csr", cwd=folder)
    _openssl("x509", "-req", "-in", f"{out}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem", "-set_serial",
             str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-out", f"{out}-cert.pem",
             "-extfile", f"{out}.ext", cwd=folder)


def make_certs(folder: str | os.PathLike) -> Path:
    """Certificates for a TLS engine, made with the ``openssl`` command line, into ``folder``:

    * ``ca.pem``, ``server-cert.pem``, ``server-key.pem``: the engine's (subjectAltName ``IP:127.0.0.1``);
    * ``client/{ca,cert,key}.pem``: a client certificate of the same CA (extendedKeyUsage clientAuth), laid
      out as ``DOCKER_CERT_PATH`` expects;
    * ``rogue/{ca,cert,key}.pem``: the same CA to check the engine, but a client certificate from another CA.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "other-ca")
    _signed(d, "ca", "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for who, ca in (("client", "ca"), ("rogue", "other-ca")):
        _signed(d, ca, who, f"fmuia-{who}", "extendedKeyUsage=clientAuth\n")
        (d / who).mkdir(exist_ok=True)
        shutil.copy(d / "ca.pem", d / who / "ca.pem")
        shutil.copy(d / f"{who}-cert.pem", d / who / "cert.pem")
        shutil.copy(d / f"{who}-key.pem", d / who / "key.pem")
    return d
