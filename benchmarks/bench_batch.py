"""Benchmark batch scoring: one engine, one slot (what ``submission.score.score_manifest`` runs) against one engine with
two slots and two engines with two slots each (``fmuia submission score --hosts``).

Needs root and a running Docker engine with ``fmuia-test-python:latest`` (``bash .ci/docker-engine.sh``).
Starts two private engines on this machine (tests/docker_engines.py), builds one template-shaped
submission that works for ``--seconds`` (sleeps: this machine's two CPUs are shared by both engines, so
only waiting scales with slots here; a real worker's GPU run does too) then writes perfect predictions,
saves it to a tar and scores ``--submissions`` copies of it. Prints the wall time of each batch and
checks that the three leaderboards are the same.

    python benchmarks/bench_batch.py [--submissions 16] [--seconds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the checkout, and the engine helper of the tests

from docker_engines import Engine, available  # noqa: E402

from fmuia._atomic import write_json  # noqa: E402
from fmuia.dataset import load_root  # noqa: E402
from fmuia.dataset.synth import synthesize  # noqa: E402
from fmuia.formats import write_predictions  # noqa: E402
from fmuia.oracle import oracle_predictions  # noqa: E402
from submission.batch import BatchOptions, score_batch  # noqa: E402
from submission.build import save_image  # noqa: E402
from submission.engine import client  # noqa: E402
from submission.hosts import read_hosts  # noqa: E402
from submission.runner import Limits  # noqa: E402


def _image(dc, work: Path, data: Path, seconds: float) -> Path:
    ctx = work / "ctx"
    shutil.copytree(REPO / "tests" / "docker" / "template", ctx)
    write_predictions(ctx / "predictions", oracle_predictions(load_root(data / "labels")))
    code = f"import runpy, time; time.sleep({seconds}); runpy.run_path('/app/model.py')"
    (ctx / "Dockerfile").write_text(
        "ARG BASE_IMAGE=fmuia-test-python:latest\nFROM ${BASE_IMAGE}\nWORKDIR /app\nCOPY model.py /app/model.py\n"
        f"COPY predictions /app/predictions\nENTRYPOINT {json.dumps(['python3', '-c', code])}\n"
    )
    tag = "fmuia-bench-batch:latest"
    dc.images.build(path=str(ctx), tag=tag, network_mode="none", rm=True, forcerm=True)
    tar = save_image(tag, work / "sub.tar", docker_client=dc)
    dc.images.remove(tag)
    return tar


def _board(board: Path) -> dict:
    lb = json.loads((board / "leaderboard.json").read_text())
    return {k: v for k, v in lb.items() if k not in ("created_at", "generated_at", "files")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--submissions", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0, help="work time of each submission")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    why = available()
    if why:
        sys.exit(f"cannot start engines: {why}")
    work = Path(tempfile.mkdtemp(prefix="fmuia-bench-batch-", dir="/tmp"))
    engines = [Engine(work / "a"), Engine(work / "b")]
    try:
        data = synthesize(work / "data", per_task=4, seed=3, split=True)
        tar = _image(client(), work, data, args.seconds)
        manifest = work / "manifest.csv"
        manifest.write_text("name,image,tar\n" + "".join(f"team-{i:02d},,{tar}\n" for i in range(args.submissions)))
        for e in engines:
            e.start()
        a, b = engines
        cases = {
            "one engine, 1 slot": [f"{a.url},none,,,,1"],
            "one engine, 2 slots": [f"{a.url},none,,,,2"],
            "two engines, 2 slots each": [f"{a.url},none,,,,2", f"{b.url},none,,,,2"],
        }
        limits = Limits(time_limit=120, memory="256m", gpus="none", tmp_size="16m")
        results, boards = {}, {}
        for label, rows in cases.items():
            hosts = work / f"hosts-{len(results)}.csv"
            hosts.write_text("url,gpus,cpus,memory,data_path,slots\n" + "\n".join(rows) + "\n")
            board = work / f"board-{len(results)}"
            out = score_batch(manifest, data / "test", data / "labels", board, limits=limits, n_bootstrap=0,
                              options=BatchOptions(hosts=read_hosts(hosts), progress=False))
            n_ok = sum(s["status"] == "scored" for s in out["submissions"].values())
            results[label] = {"seconds": out["seconds"], "scored": n_ok}
            boards[label] = _board(board)
            print(f"{label:28s} {out['seconds']:7.1f} s  ({n_ok}/{args.submissions} scored)", flush=True)
        same = all(bd == boards["one engine, 1 slot"] for bd in boards.values())
        base = results["one engine, 1 slot"]["seconds"]
        for r in results.values():
            r["speedup"] = round(base / r["seconds"], 2)
        print("speed-up against one slot: " + ", ".join(f"{k}: x{v['speedup']}" for k, v in results.items()))
        print(f"leaderboards identical: {same}")
        if args.json:
            write_json(args.json, {"submissions": args.submissions, "seconds_each": args.seconds, "results": results,
                                   "leaderboards_identical": same})
    finally:
        for e in engines:
            e.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
