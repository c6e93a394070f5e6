"""Read a data root and validate a prediction folder from Python (what `fmuia check` does).

Runs standalone: makes a small synthetic split (test root without labels + its labels) in a
temporary folder, writes perfect predictions from the labels, checks them against the test root,
then breaks one prediction to show what a problem looks like, and packs the valid folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fmuia.check import check_predictions
from fmuia.dataset import load_root
from fmuia.dataset.synth import synthesize
from fmuia.formats import write_predictions
from fmuia.oracle import oracle_predictions
from fmuia.pack import pack_predictions


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "data", per_task=3, seed=0, split=True)

        # The hidden-test root lists what must be predicted; it carries no labels.
        test = load_root(tmp / "data" / "test")
        print(f"test root: {len(test.samples)} rows, {len(test.tasks)} tasks, labelled={test.labelled}")

        # Perfect predictions from the organisers' labels, in the official layout.
        write_predictions(tmp / "pred", oracle_predictions(load_root(tmp / "data" / "labels")))

        report = check_predictions(tmp / "pred", test)
        print(report.summary_table())
        assert report.ok

        # Pack it the way Codabench expects (files at the archive root, nothing else).
        pack_predictions(tmp / "pred", test, tmp / "predictions.zip")
        print("packed:", check_predictions(tmp / "predictions.zip", test).verdict())

        # Break one classification entry: the report names the file, the entry and the expectation.
        path = tmp / "pred" / "classification_predictions.json"
        entries = json.loads(path.read_text())
        entries[0]["predicted_probs"] = entries[0]["predicted_probs"][:-1]
        path.write_text(json.dumps(entries))
        broken = check_predictions(tmp / "pred", test)
        for problem in broken.problems:
            print(problem)
        print(broken.verdict())
        assert not broken.ok and broken.to_dict()["n_errors"] == 1


if __name__ == "__main__":
    main()
