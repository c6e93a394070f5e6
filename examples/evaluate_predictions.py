"""Score predictions against labels, in both modes, from Python.

Makes a small synthetic split in a temporary folder, writes perfect ("oracle") predictions for
the test rows, spoils a few of them, evaluates in official and strict mode and prints the nine
leaderboard aggregates side by side. Runs standalone, no arguments, CPU only, in seconds.

    python examples/evaluate_predictions.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from evaluation.aggregates import AGGREGATES, compute_aggregates
from evaluation.scoring import evaluate, write_results
from fmuia.dataset import load_root
from fmuia.dataset.schema import prediction_mask_relpath
from fmuia.dataset.synth import synthesize
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = synthesize(tmp_path / "data", per_task=6, seed=0, split=True)
        labels_root = data / "labels"  # the hidden labels of the test rows
        labels = load_root(labels_root)

        preds = tmp_path / "preds"
        write_predictions(preds, oracle_predictions(labels))  # a perfect submission...
        # ...then spoil it: one mask missing, one classification entry malformed
        first_mask = next(s for s in labels.samples if s.mask_path)
        (preds / prediction_mask_relpath(first_mask.mask_path)).unlink()
        cls_file = preds / "classification_predictions.json"
        entries = json.loads(cls_file.read_text())
        entries[0]["predicted_class"] = "not a number"
        cls_file.write_text(json.dumps(entries))

        official = evaluate(preds, labels_root, mode="official")
        strict = evaluate(preds, labels_root, mode="strict", n_bootstrap=200, seed=0)
        paths = write_results(strict, tmp_path / "results" / "results.json")

        off_agg = compute_aggregates(official)  # tasks with no matched sample are left out
        print(f"{'aggregate':<16}{'official':>10}{'strict':>10}  direction")
        for key, (_, _, direction) in AGGREGATES.items():
            o, s = off_agg[key], strict["aggregates"][key]
            print(f"{key:<16}{o if o is None else round(o, 4)!s:>10}{s if s is None else round(s, 4)!s:>10}  {direction} is better")
        failed = [c for c in strict["per_case"] if c["reason"]]
        print(f"\nstrict mode scored {len(strict['per_case'])} rows; {len(failed)} got the worst value:")
        for c in failed:
            print(f"  {c['task_id']} {c['image_path']}: {c['reason']}")
        print("\nfiles written:", ", ".join(p.name for p in paths.values()))


if __name__ == "__main__":
    main()
