"""Score a manifest on every slot of one or several Docker engines at once (``fmuia submission score``).

One scheduler thread per slot takes submissions from one queue. Each run goes through the engine API
(:mod:`submission.worker`): the image is loaded on the engine that runs it, the output pulled back,
checked (``fmuia check``) and scored (strict) here, on the coordinator, exactly as one engine does.

Failures are data: a host that goes away (engine unreachable, container gone) is marked down, its running
submission goes back to the queue for another host (at most ``max_attempts`` attempts), the host's other
slots stop taking work. Every attempt (host, slot, start, end, outcome, reason) is kept in
``BOARD/state.json``, rewritten atomically after every change. Re-running the same command resumes:
finished submissions (``BOARD/submissions/<name>/state.json``, as before) are skipped, interrupted ones run
again. Ctrl-C stops new starts, kills running containers and leaves a resumable state.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.scoring import evaluate, write_results
from fmuia._atomic import ensure_dir, write_json
from fmuia.errors import FmuiaError
from submission.engine import EngineError, SubmissionError
from submission.hosts import Host, Slot, local_host, parse_size
from submission.runner import INVALID, OK, Limits, RunResult
from submission.score import FAILED, SCORED, Entry, _state_path, read_manifest, read_state, write_leaderboard
from submission.transfer import input_digest
from submission.worker import HostDown, HostSession, Interrupted, tar_image_id

PENDING = "pending"
# One output is checked and scored at a time: strict scoring already uses every CPU for the masks, so
# two at once would only compete (containers keep running in the other slots meanwhile).
_SCORING = threading.Lock()
RUNNING = "running"
HOST_DOWN = "host down"
INTERRUPTED = "interrupted"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class BatchState:
    """``BOARD/state.json``: every submission's status and attempts, every host's status; written
    atomically (under a lock) after each change."""

    def __init__(self, path: Path, batch_id: str):
        self.path = path
        self._lock = threading.Lock()
        try:
            prev = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prev = {}
        # earlier runs' batch ids: an interrupted one may have left containers or volumes behind
        self.earlier: tuple[str, ...] = tuple(dict.fromkeys([*prev.get("earlier_batches", []), prev["batch"]])) \
            if prev.get("batch") else ()
        self.data: dict[str, Any] = {
            "version": 1, "batch": batch_id, "earlier_batches": list(self.earlier[-20:]), "runs": prev.get("runs", 0) + 1,
            "submissions": prev.get("submissions", {}), "hosts": prev.get("hosts", {}),
        }

    def write(self) -> None:
        self.data["updated_at"] = _now()
        write_json(self.path, self.data)

    def sub(self, name: str) -> dict:
        return self.data["submissions"][name]

    def prepare(self, entry: Entry, *, finished: dict | None, retry: bool) -> None:
        """Bring an entry's record up to date at the start of a run (an earlier run's in-flight attempt
        is closed as interrupted; a changed source starts afresh)."""
        with self._lock:
            rec = self.data["submissions"].get(entry.name)
            if rec is None or rec.get("source") != entry.source:
                rec = {"source": entry.source, "attempts": []}
            for att in rec["attempts"]:
                if att.get("outcome") is None:
                    att.update(outcome=INTERRUPTED, reason="the coordinator stopped during the run", ended_at=_now())
            if finished is not None:
                rec["status"] = finished.get("status")
            else:
                rec["status"] = PENDING
                if retry:
                    rec["retry_from"] = len(rec["attempts"])
            self.data["submissions"][entry.name] = rec
            self.write()

    def host_failures(self, name: str) -> int:
        """Attempts of this submission that a failing host cut short (since the last ``--retry-failed``)."""
        rec = self.sub(name)
        return sum(a.get("outcome") == HOST_DOWN for a in rec["attempts"][rec.get("retry_from", 0):])

    def start(self, name: str, slot: Slot) -> int:
        with self._lock:
            rec = self.sub(name)
            rec["status"] = RUNNING
            rec["attempts"].append({
                "n": len(rec["attempts"]) + 1, "host": slot.host, "slot": slot.index, "gpus": list(slot.gpu_ids),
                "cpuset": slot.cpuset, "memory": slot.memory, "started_at": _now(), "ended_at": None,
                "outcome": None, "reason": None,
            })
            self.write()
            return len(rec["attempts"])

    def end(self, name: str, outcome: str, reason: str | None, status: str) -> None:
        with self._lock:
            rec = self.sub(name)
            rec["attempts"][-1].update(outcome=outcome, reason=reason, ended_at=_now())
            rec["status"] = status
            self.write()

    def host(self, url: str, **fields: Any) -> None:
        with self._lock:
            self.data["hosts"].setdefault(url, {}).update(fields)
            self.write()


@dataclass
class BatchOptions:
    """How a batch runs (CLI: ``--hosts``, ``--slots``, ``--gpus-per-run``, ``--max-attempts``, ...)."""

    hosts: list[Host] | None = None  # None: the local engine (input bind-mounted read-only)
    slots: int | None = None  # per host (default: from --gpus-per-run / the hosts file, else 1)
    gpus_per_run: int | None = None
    max_attempts: int = 3
    keep_images: bool = False
    max_output: str = "4g"  # cap on the size of one pulled output
    progress: bool | None = None  # None: a live view when stderr is a terminal

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise SubmissionError(f"--max-attempts must be at least 1, got {self.max_attempts}")
        if self.slots is not None and self.slots < 1:
            raise SubmissionError(f"--slots must be at least 1, got {self.slots}")
        if self.gpus_per_run is not None and self.gpus_per_run < 1:
            raise SubmissionError(f"--gpus-per-run must be at least 1, got {self.gpus_per_run}")
        parse_size(self.max_output)


class _Progress:
    """A live view: one tqdm bar for the batch and one line per slot (what it runs); plain log lines
    when not on a terminal."""

    def __init__(self, total: int, slots: list[Slot], log: Callable[[str], None], enabled: bool):
        self.log = log
        self.bars: dict[str, Any] = {}
        self.main = None
        if enabled:
            from tqdm import tqdm

            self.main = tqdm(total=total, desc="submissions", position=0, file=sys.stderr, leave=True)
            for i, s in enumerate(slots, start=1):
                self.bars[s.name] = tqdm(total=0, desc=s.name, position=i, file=sys.stderr, leave=False,
                                         bar_format="{desc}: {postfix}")
                self.bars[s.name].set_postfix_str("idle")
        self._lock = threading.Lock()

    def say(self, msg: str) -> None:
        with self._lock:
            if self.main is not None:
                self.main.write(msg, file=sys.stderr)
            else:
                self.log(msg)

    def slot(self, slot: Slot, text: str) -> None:
        if slot.name in self.bars:
            with self._lock:
                self.bars[slot.name].set_postfix_str(text)

    def done(self) -> None:
        if self.main is not None:
            with self._lock:
                self.main.update(1)

    def close(self) -> None:
        for b in self.bars.values():
            b.close()
        if self.main is not None:
            self.main.close()


def _finish(entry: Entry, result: RunResult, sub_dir: Path, input_dir: Path, labels_dir: Path, n_bootstrap: int) -> dict:
    """Check and score a pulled output; the submission's final state (``submissions/<name>/state.json``)."""
    from fmuia.check import check_predictions

    state: dict[str, Any] = {"status": FAILED, "reason": result.reason}
    out = Path(result.output_dir)
    if result.status == OK:
        report = check_predictions(out, input_dir)
        result.check = report.to_dict()
        write_json(sub_dir / "output.check.json", result.check)
        if not report.ok:
            result.status = INVALID
            result.reason = f"fmuia check: {len(report.errors)} error(s); first: {report.errors[0]}"
            if result.unsafe_entries:
                result.reason += f"; left out: {', '.join(result.unsafe_entries[:5])}"
    state["run"] = result.to_dict()
    if result.status != OK:
        state["reason"] = result.reason
        return state
    results = evaluate(out, labels_dir, mode="strict", n_bootstrap=n_bootstrap)
    write_results(results, sub_dir / "results.json")
    state.update(status=SCORED, reason=None, results=str(sub_dir / "results.json"))
    return state


def score_batch(
    manifest: str | Path,
    input_dir: str | Path,
    labels_dir: str | Path,
    board_dir: str | Path,
    *,
    limits: Limits | None = None,
    options: BatchOptions | None = None,
    retry_failed: bool = False,
    n_bootstrap: int = 1000,
    log: Callable[[str], None] = lambda _msg: None,
    docker_client: Any = None,
) -> dict:
    """Score every submission of ``manifest`` on the slots of ``options.hosts``; write the leaderboard.

    ``docker_client``: an engine already connected, used as the default host (``options.hosts`` None)
    and as the engine that ``image`` rows are taken from; default: the one ``DOCKER_HOST`` names.

    Returns ``{"submissions": {name: state}, "leaderboard": ..., "hosts": {url: ...}, "seconds": wall,
    "pending": [names not finished], "interrupted": bool}``. Raises ``KeyboardInterrupt`` again after a
    Ctrl-C, once the state is written and the engines are cleaned.
    """
    t_start = time.monotonic()
    entries = read_manifest(manifest)
    inp, labels, board = Path(input_dir).resolve(), Path(labels_dir), Path(board_dir)
    for p, what in ((inp, "test input"), (labels, "labels")):
        if not p.is_dir():
            raise SubmissionError(f"{p}: no such {what} folder")
    ensure_dir(board)
    limits = limits or Limits()
    opts = options or BatchOptions()
    hosts = opts.hosts or [local_host()]
    if opts.hosts is None and hosts[0].local:  # a local engine sees our files: the input is bind-mounted (ro)
        hosts = [Host(hosts[0].url, data_path=str(inp))]
    max_output = parse_size(opts.max_output)
    batch_id = uuid.uuid4().hex[:10]
    bstate = BatchState(board / "state.json", batch_id)

    states: dict[str, dict] = {}
    todo: list[Entry] = []
    for entry in entries:
        prev = read_state(board, entry.name)
        done = prev is not None and prev.get("source") == entry.source and (
            prev.get("status") == SCORED or (prev.get("status") == FAILED and not retry_failed))
        bstate.prepare(entry, finished=prev if done else None, retry=retry_failed)
        if done:
            log(f"{entry.name}: already {prev['status']}, skipped")
            states[entry.name] = prev
        else:
            todo.append(entry)

    sessions: list[HostSession] = []
    interrupted = False
    if todo:
        sessions, interrupted = _run(todo, inp, labels, board, hosts, limits, opts, bstate, batch_id, states,
                                     max_output, n_bootstrap, log, docker_client if opts.hosts is None else None,
                                     docker_client)
    for entry in entries:  # manifest order; unfinished ones listed with why
        if entry.name not in states:
            rec = bstate.sub(entry.name)
            last = rec["attempts"][-1]["reason"] if rec["attempts"] else None
            states[entry.name] = {"name": entry.name, "source": entry.source, "status": PENDING,
                                  "reason": "not finished" + (f" (last attempt: {last})" if last else "")}
    states = {e.name: states[e.name] for e in entries}
    board_info = write_leaderboard(states, board, n_bootstrap=n_bootstrap)
    hosts_info = bstate.data["hosts"]
    out = {"submissions": states, "leaderboard": board_info, "hosts": hosts_info,
           "seconds": round(time.monotonic() - t_start, 3),
           "pending": [n for n, s in states.items() if s["status"] == PENDING], "interrupted": interrupted}
    if interrupted:
        raise KeyboardInterrupt(out)
    return out


def _run(todo, inp, labels, board, hosts, limits, opts, bstate, batch_id, states, max_output, n_bootstrap, log,
         host_client=None, coordinator_client=None):
    from submission.engine import client as local_client

    source: dict[str, Any] = {} if coordinator_client is None else {"dc": coordinator_client}

    def source_client() -> Any:  # the engine `image` rows come from: the coordinator's own
        if "dc" not in source:
            source["dc"] = local_client()
        return source["dc"]

    # host_client: the caller's client for the one default host (score_manifest's docker_client)
    sessions = [HostSession(h, batch_id, source_client=source_client, client=host_client) for h in hosts]
    by_name = {e.name: e for e in todo}
    expected: dict[str, str | None] = {}
    exp_lock = threading.Lock()

    def expected_id(entry: Entry) -> str | None:
        with exp_lock:
            if entry.source not in expected:
                expected[entry.source] = tar_image_id(entry.tar) if entry.tar is not None else None
            return expected[entry.source]

    run_memory = parse_size(limits.memory)
    slots: list[tuple[HostSession, Slot]] = []

    def setup(sess: HostSession) -> None:
        try:
            sess.connect()
            # images an interrupted run loaded here are this batch's too (removed at the end)
            sess.loaded.extend(bstate.data["hosts"].get(sess.url, {}).get("loaded_images", []))
            probe = None
            if opts.gpus_per_run and sess.host.gpus is None and not (sess.host.local and _has_smi()):
                e = todo[0]
                probe = sess.ensure_image(e.source, e.tar, e.image, expected_id(e))
            planned = sess.plan(gpus_per_run=opts.gpus_per_run, n_slots=opts.slots, run_memory=run_memory,
                                probe_image=probe)
        except HostDown as exc:
            sess.mark_down(str(exc))
            bstate.host(sess.url, status="down", reason=str(exc), slots=[])
            return
        except FmuiaError as exc:
            sess.mark_down(exc.message)
            bstate.host(sess.url, status="down", reason=exc.message, slots=[])
            return
        with lock:
            slots.extend((sess, s) for s in planned)
        bstate.host(sess.url, status="up", reason=None, batch=batch_id,
                    slots=[{"index": s.index, "gpus": list(s.gpu_ids), "cpuset": s.cpuset, "memory": s.memory}
                           for s in planned])

    lock = threading.Lock()
    threads = [threading.Thread(target=setup, args=(s,), daemon=True) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort(key=lambda x: (hosts.index(x[0].host), x[1].index))
    if not slots:
        reasons = "; ".join(f"{s.url}: {s.down or 'no slot (too few GPUs for --gpus-per-run)'}" for s in sessions)
        raise EngineError(f"no slot to run submissions on ({reasons})")
    for sess in sessions:
        n = sum(1 for s, _ in slots if s is sess)
        log(f"{sess.url}: " + (f"down ({sess.down})" if sess.down else
                               f"{n} slot(s): " + ", ".join(_describe(sl) for s, sl in slots if s is sess)))

    work: queue.Queue[str] = queue.Queue()
    for e in todo:
        work.put(e.name)
    remaining = {"n": len(todo)}
    cond = threading.Condition()
    stopping = threading.Event()
    digest = input_digest(inp)
    enabled = sys.stderr.isatty() if opts.progress is None else opts.progress
    progress = _Progress(len(todo), [s for _, s in slots], log, enabled)

    def finished(name: str, state: dict) -> None:
        write_json(_state_path(board, name), state)
        states[name] = state
        progress.done()
        with cond:
            remaining["n"] -= 1
            cond.notify_all()

    def attempt(sess: HostSession, slot: Slot, name: str) -> None:
        entry = by_name[name]
        sub_dir = board / "submissions" / name
        ensure_dir(sub_dir)
        n = bstate.start(name, slot)
        progress.slot(slot, f"{name} (attempt {n})")
        progress.say(f"{name}: running on {_describe(slot)} (attempt {n})")
        t0 = time.monotonic()
        base = {"name": name, "source": entry.source, "host": slot.host, "slot": slot.index}
        try:
            image_id = sess.ensure_image(entry.source, entry.tar, entry.image, expected_id(entry))
            if image_id in sess.loaded:
                bstate.host(sess.url, loaded_images=list(dict.fromkeys(sess.loaded)))
            reuse = bstate.data["hosts"].get(sess.url, {}).get("data_volume")
            mount, vol = sess.input_mount(inp, digest, image_id, reuse=reuse)
            if vol is not None and reuse != vol:
                bstate.host(sess.url, data_volume=vol)
            result = sess.run(slot, image_id, name, n, mount, limits, sub_dir, max_output=max_output, stopping=stopping)
            progress.slot(slot, f"{name}: scoring")
            with _SCORING:
                state = {**base, "image_id": image_id, **_finish(entry, result, sub_dir, inp, labels, n_bootstrap)}
        except HostDown as exc:
            sess.mark_down(str(exc))
            bstate.host(sess.url, status="down", reason=str(exc))
            fails = bstate.host_failures(name) + 1
            if fails >= opts.max_attempts:
                bstate.end(name, HOST_DOWN, str(exc), FAILED)
                reason = f"gave up after {fails} attempt(s) cut short by failing hosts; last: {exc}"
                finished(name, {**base, "status": FAILED, "reason": reason, "seconds": round(time.monotonic() - t0, 3),
                                "finished_at": _now(), "attempts": bstate.sub(name)["attempts"]})
            else:
                bstate.end(name, HOST_DOWN, str(exc), PENDING)
                progress.say(f"{name}: {sess.url} went down ({exc}); back in the queue")
                work.put(name)
            progress.slot(slot, f"host down: {exc}"[:80])
            return
        except Interrupted as exc:
            bstate.end(name, INTERRUPTED, str(exc), PENDING)
            return
        except FmuiaError as exc:
            state = {**base, "status": FAILED, "reason": exc.message}
        except Exception as exc:  # this submission's trouble with the engine: recorded, the batch goes on
            state = {**base, "status": FAILED, "reason": f"{exc.__class__.__name__}: {exc}"}
        state["seconds"] = round(time.monotonic() - t0, 3)
        state["finished_at"] = _now()
        bstate.end(name, state["status"], state.get("reason"), state["status"])
        state["attempts"] = bstate.sub(name)["attempts"]
        finished(name, state)
        msg = state["status"] + (f" ({state['reason']})" if state.get("reason") else "")
        progress.say(f"{name}: {msg} in {state['seconds']:.1f} s on {_describe(slot)}")
        progress.slot(slot, "idle")

    def worker(sess: HostSession, slot: Slot) -> None:
        while not stopping.is_set() and sess.down is None:
            with cond:
                if remaining["n"] <= 0:
                    return
            try:
                name = work.get(timeout=0.2)
            except queue.Empty:
                continue
            if stopping.is_set() or sess.down is not None:
                work.put(name)
                return
            attempt(sess, slot, name)

    workers = [threading.Thread(target=worker, args=(sess, sl), daemon=True, name=sl.name) for sess, sl in slots]
    interrupted = False
    try:
        for t in workers:
            t.start()
        with cond:
            while remaining["n"] > 0 and any(t.is_alive() for t in workers):
                cond.wait(0.2)
    except KeyboardInterrupt:
        interrupted = True
        stopping.set()
        progress.say("stopping: no new starts, killing running containers (the state stays resumable)")
        for sess in sessions:
            sess.kill_running()
        for t in workers:
            t.join(timeout=180)
    finally:
        progress.close()
        for sess in sessions:
            left = sess.cleanup(keep_images=opts.keep_images, earlier_batches=bstate.earlier[-20:])
            for msg in left:
                log(f"cleanup: {msg}")
            if sess.dc is not None and sess.down is None:
                loaded = list(dict.fromkeys(sess.loaded))
                bstate.host(sess.url, images_loaded=len(loaded), images_removed=0 if opts.keep_images or left else len(loaded),
                            loaded_images=loaded if opts.keep_images or left else [])
    return sessions, interrupted


def _has_smi() -> bool:
    import shutil

    return shutil.which("nvidia-smi") is not None


def _describe(slot: Slot) -> str:
    parts = [f"gpus {','.join(slot.gpu_ids)}" if slot.gpu_ids else "no gpu" if slot.pin_gpus else ""]
    if slot.cpuset:
        parts.append(f"cpus {slot.cpuset}")
    if slot.memory:
        parts.append(f"{slot.memory >> 20} MiB")
    return f"{slot.name} [" + ", ".join(p for p in parts if p) + "]"


def summary_lines(out: dict) -> list[str]:
    """The final summary: counts, then one line per host (slots, state) and per unfinished submission."""
    states = out["submissions"]
    n = {k: sum(s["status"] == k for s in states.values()) for k in (SCORED, FAILED, PENDING)}
    lines = [f"{n[SCORED]} scored, {n[FAILED]} failed" + (f", {n[PENDING]} not finished" if n[PENDING] else "")
             + f" in {out['seconds']:.1f} s"]
    for url, h in out.get("hosts", {}).items():
        lines.append(f"  {url}: {h.get('status', '?')}" + (f" ({h['reason']})" if h.get("reason") else "")
                     + f", {len(h.get('slots') or [])} slot(s)")
    for name in out.get("pending", []):
        lines.append(f"  {name}: {states[name]['reason']}")
    return lines
