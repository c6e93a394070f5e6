"""Extra Docker engines on this machine, for the multi-host batch tests and benchmarks/bench_batch.py.

Each engine is its own ``dockerd`` with its own ``--data-root``, ``--exec-root``, ``--pidfile`` and unix
socket under a scratch folder, and its own managed containerd (dockerd starts one under its exec-root, so
two engines never share a containerd socket). No iptables, NAT or bridge: everything runs with
``--network none``. :meth:`Engine.kill` SIGKILLs the dockerd (an engine that goes away mid-run);
:meth:`Engine.stop` restarts a killed engine once so that it kills and forgets the containers it left,
then stops it with SIGTERM and removes its folders: nothing outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class Engine:
    """One private ``dockerd`` (root only)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.sock = self.root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.proc: subprocess.Popen | None = None
        self.killed = False

    def start(self, timeout: float = 60) -> Engine:
        """Start dockerd and wait until it answers; raises RuntimeError with its log when it does not."""
        for d in ("data", "exec"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "docker.pid"), "-H", self.url, "--iptables=false", "--ip-masq=false",
             "--bridge=none", "--shutdown-timeout", "2"],
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
        import docker

        try:
            docker.DockerClient(base_url=self.url, timeout=5).ping()
            return True
        except Exception:
            return False

    def client(self, timeout: int = 600):
        import docker

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
