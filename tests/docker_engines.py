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


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start a daemon in its own session, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _wait_up(proc: subprocess.Popen, up, timeout: float, every: float) -> bool:
    """Poll ``up()`` until it is true (True), the process exits or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if up():
            return True
        time.sleep(every)
    return False

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
        self.proc = _spawn(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "docker.pid"), "-H", self.url, *self._tls_args(), "--iptables=false",
             "--ip-masq=false", "--bridge=none", "--shutdown-timeout", "2"], self.root / "dockerd.log")
        if _wait_up(self.proc, self.ping, timeout, 0.25):
            self.killed = False
            return self
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


class SSHServer:
    """A private ``sshd`` on ``127.0.0.1:<free port>`` whose sessions reach one engine (root only).

    Everything lies in ``root``: the sshd config, host key, log and pid file; a fresh client key
    (``client_key``, the only one ``authorized_keys`` lists) and a second one it does not list
    (``other_key``). ``SetEnv DOCKER_HOST=<engine url>`` makes the far side's ``docker system dial-stdio``
    talk to the private engine. :meth:`client_env` puts an ``ssh`` wrapper first on PATH that runs
    ``/usr/bin/ssh -F <our client config>`` (the key, a known_hosts file of our own): the docker SDK runs
    plain ``ssh`` and root's ``~/.ssh`` is never read or written.
    """

    def __init__(self, root: str | os.PathLike, docker_host: str):
        self.root = Path(root)
        self.docker_host = docker_host
        self.port = free_port()
        self.url = f"ssh://root@127.0.0.1:{self.port}"
        self.client_key = self.root / "client_ed25519"
        self.other_key = self.root / "other_ed25519"
        self.proc: subprocess.Popen | None = None

    def _keygen(self, path: Path, comment: str) -> None:
        proc = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed:\n{proc.stderr[-2000:]}")

    def start(self, timeout: float = 30) -> SSHServer:
        """Make the keys and configs, start ``sshd -D`` and wait until it accepts TCP connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        r = self.root
        self._keygen(r / "host_ed25519", "fmuia-test-host")
        self._keygen(self.client_key, "fmuia-test-client")
        self._keygen(self.other_key, "fmuia-test-other")
        (r / "authorized_keys").write_text((r / "client_ed25519.pub").read_text())
        (r / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {r / 'host_ed25519'}",
            f"PidFile {r / 'sshd.pid'}", f"AuthorizedKeysFile {r / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "StrictModes no", "UsePAM no", "PrintMotd no",
            f"SetEnv DOCKER_HOST={self.docker_host}", "LogLevel VERBOSE", "",
        ]))
        self.set_client_key(self.client_key)
        wrapper = r / "bin" / "ssh"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {r / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        # sshd insists on its privilege separation folder (the package's service unit makes it at boot)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc = _spawn(["/usr/sbin/sshd", "-D", "-f", str(r / "sshd_config"), "-E", str(r / "sshd.log")],
                           r / "sshd.stderr")
        if _wait_up(self.proc, self._accepts, timeout, 0.1):
            return self
        log_text = self.log_tail()
        self.stop()
        raise RuntimeError(f"sshd on port {self.port} did not come up:\n{log_text}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def set_client_key(self, key: Path) -> None:
        """The key the wrapped ``ssh`` offers (``other_key``: one the server refuses)."""
        r = self.root
        (r / "ssh_config").write_text("\n".join([
            "Host *", f"  IdentityFile {key}", "  IdentitiesOnly yes", "  IdentityAgent none",
            "  StrictHostKeyChecking no", f"  UserKnownHostsFile {r / 'known_hosts'}",
            "  GlobalKnownHostsFile /dev/null", "  LogLevel ERROR", "",
        ]))

    def client_env(self) -> dict[str, str]:
        """PATH with the ``ssh`` wrapper first."""
        return {"PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    def log_tail(self, n: int = 30) -> str:
        text = ""
        for name in ("sshd.stderr", "sshd.log"):
            try:
                text += "\n".join((self.root / name).read_text(errors="replace").splitlines()[-n:]) + "\n"
            except OSError:
                pass
        return text or "(no log)"

    def sessions(self) -> list[int]:
        """The pids of the sshd's children (one per open ssh connection)."""
        if self.proc is None:
            return []
        found, frontier = [], {self.proc.pid}
        while frontier:
            children = []
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    try:
                        ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        continue
                    if ppid in frontier:
                        children.append(int(d.name))
            found += children
            frontier = set(children)
        return found

    def stop(self) -> None:
        """Stop sshd and whatever sessions it still has, then remove its folder."""
        if self.proc is not None:
            left = self.sessions()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def ssh_missing() -> str | None:
    """What is missing here for the ssh:// engine tests (``None`` when nothing is)."""
    import importlib.util

    missing = [what for what, ok in (
        ("openssh-server (/usr/sbin/sshd)", os.path.exists("/usr/sbin/sshd")),
        ("openssh-client (/usr/bin/ssh, ssh-keygen)", os.path.exists("/usr/bin/ssh") and shutil.which("ssh-keygen")),
        ("the docker CLI (docker on PATH)", shutil.which("docker")),
        ("paramiko (pip install 'paramiko>=3.4')", importlib.util.find_spec("paramiko") is not None),
    ) if not ok]
    return ", ".join(missing) if missing else None
