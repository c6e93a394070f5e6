"""A tiny headless-Chromium driver for tests (stdlib only): open a local page, inspect it, screenshot it.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): it reads
commands from its fd 3 and writes replies and events to its fd 4, one JSON message per NUL-terminated
chunk. One :class:`Browser` is one Chromium process with a throw-away profile; :meth:`Browser.open`
loads a page in a fresh tab and returns a :class:`Tab` whose console errors are collected from
``Runtime.consoleAPICalled``, ``Runtime.exceptionThrown`` and ``Log.entryAdded``.

Usage::

    exe = find_chromium()            # None -> pytest.skip(SKIP_REASON)
    with Browser(exe) as browser:
        tab = browser.open(path)     # waits for the load event
        tab.evaluate("document.images.length")
        png = tab.screenshot()
        tab.errors                   # ["console.error: ...", "exception: ...", "log error: ..."]
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SKIP_REASON = (
    "headless Chromium not found: the browser test of the HTML report needs it. Install it with "
    "`apt-get install -y --no-install-recommends chromium` (Debian/Ubuntu; .ci/run does this when it can), "
    "or set CHROMIUM=/path/to/chromium"
)
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM`` if set, else the first of the usual names on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10, so that it cannot be 3 or 4 (where the child wants the pipes)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class BrowserError(RuntimeError):
    """Chromium did not answer, answered with an error, or exited."""


class Browser:
    """One headless Chromium process driven over ``--remote-debugging-pipe``."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="fmuia-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        to_child_r, from_child_w = _high_fd(to_child_r), _high_fd(from_child_w)
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank",
        ]
        # bash puts the two pipe ends on fds 3 and 4, where Chromium expects them (dup2 in preexec_fn
        # could clobber the fds subprocess itself uses in the child; dash takes one-digit fds only).
        script = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        self._proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", script, executable, *args], pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: queue.Queue[dict] = queue.Queue()
        self._cond = threading.Condition()
        self._closed = False
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._read_loop, daemon=True).start()
        threading.Thread(target=self._stderr_loop, daemon=True).start()
        try:
            self.send("Browser.getVersion")
        except BaseException:
            self.close()
            raise

    # ---- protocol -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _stderr_loop(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_tail = (self._stderr_tail + [line.decode("utf-8", "replace").rstrip()])[-20:]

    def _stderr(self) -> list[str]:
        try:  # give a dying process a moment to say why
            self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.1)
        return self._stderr_tail

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its reply's ``result``; :class:`BrowserError` on an error reply."""
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        try:
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise BrowserError(f"{method}: Chromium is gone ({exc}); stderr: {self._stderr()}") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    why = "exited" if self._closed else "timed out"
                    raise BrowserError(f"{method}: Chromium {why}; stderr: {self._stderr()}")
                self._cond.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None, timeout: float | None = None,
                   sink: list[dict] | None = None) -> dict:
        """Wait for the next event ``method`` (of ``session``); every other event goes to ``sink``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {method} event within {timeout or self.timeout:.0f} s")
            try:
                ev = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
            if sink is not None:
                sink.append(ev)

    def drain(self, sink: list[dict]) -> None:
        """Move the events received so far into ``sink``."""
        while True:
            try:
                sink.append(self._events.get_nowait())
            except queue.Empty:
                return

    # ---- pages ----------------------------------------------------------------------------------

    def open(self, path: str | os.PathLike, *, timeout: float | None = None) -> Tab:
        """Open the local file ``path`` in a new tab and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, target, session)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self.wait_event("Page.loadEventFired", session, timeout=timeout, sink=tab._events)
        return tab

    def close(self) -> None:
        """Ask Chromium to quit, kill it if it does not, remove the profile."""
        if self._proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except BrowserError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tab:
    """One page opened by :meth:`Browser.open`."""

    def __init__(self, browser: Browser, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session
        self._events: list[dict] = []

    def evaluate(self, expression: str, *, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression (promises awaited); :class:`BrowserError` if it throws."""
        res = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, session=self.session, timeout=timeout)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} threw: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def screenshot(self, *, full_page: bool = False) -> bytes:
        """A PNG of the viewport (or of the whole page, ``full_page=True``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.browser.send("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.browser.send("Page.captureScreenshot", params, session=self.session, timeout=60)["data"]
        return base64.b64decode(data)

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries of this tab so far."""
        self.browser.drain(self._events)
        out = []
        for ev in self._events:
            if ev.get("sessionId") != self.session:
                continue
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                out.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log error: {entry.get('text')} {entry.get('url', '')}".rstrip())
        return out


def screenshot_stats(png: bytes) -> tuple[int, float]:
    """(number of distinct colours, grey-level standard deviation) of a screenshot."""
    with Image.open(io.BytesIO(png)) as img:
        rgb = np.asarray(img.convert("RGB"))
    flat = rgb.reshape(-1, 3).astype(np.int64)
    colours = np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]).size
    return int(colours), float(rgb.mean(axis=2).std())


# JavaScript: every image of the page with whether it loaded (complete and with a natural width).
IMAGES_JS = ("Array.from(document.images).map((im, i) => ({i, alt: im.alt, complete: im.complete, "
             "width: im.naturalWidth, height: im.naturalHeight}))")
# JavaScript: open every <details> (so that what is inside gets laid out), then wait for every image to decode.
OPEN_ALL_JS = ("(async () => { document.querySelectorAll('details').forEach(d => d.open = true); "
               "await Promise.allSettled(Array.from(document.images).map(im => im.decode())); "
               "return document.querySelectorAll('details').length; })()")
