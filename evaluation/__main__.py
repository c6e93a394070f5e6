"""``python -m evaluation PRED_DIR --data LABELS --out results.json [--mode ...]``: the same command
as ``fmuia evaluate``, for organizers' scoring servers."""

from evaluation.cli import main

if __name__ == "__main__":
    main(exiting=True)
