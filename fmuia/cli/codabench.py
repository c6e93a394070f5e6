"""``fmuia codabench``: Codabench tooling (a thin wrapper over :mod:`evaluation.codabench`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("codabench")
def codabench() -> None:
    """Codabench tooling: build the competition bundle an organizer uploads.

    The scoring program inside runs `python -m evaluation.codabench INPUT OUTPUT` (labels in
    INPUT/ref, the unzipped submission in INPUT/res) and writes OUTPUT/scores.json with the
    nine leaderboard keys and OUTPUT/detailed_results.html.
    """


@codabench.command("bundle")
@click.option("--labels", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled data root of the hidden test set (csv_files/, images, masks).")
@click.option("--out", "out_zip", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Bundle zip to write.")
@click.option("--title", default="FM_UIA 2026", show_default=True, help="Competition title.")
@click.option("--docker-image", default=None, help="Docker image that runs the scoring program: Python >= 3.10 with numpy, scipy, scikit-learn, Pillow, pycocotools (no torch). Build one from the bundle's scoring_image.Dockerfile. [default: fmuia/scoring:0.1.0]")
@click.option("--start", default=None, help="Phase start, 'YYYY-MM-DD HH:MM:SS' UTC [default: today 00:00].")
@click.option("--time-limit", "time_limit", type=click.IntRange(60, 86_400), default=3600, show_default=True, help="Execution time limit of a scoring run, in seconds.")
def bundle(labels: Path, out_zip: Path, title: str, docker_image: str | None, start: str | None, time_limit: int) -> None:
    """Build the Codabench competition bundle from a labelled root.

    \b
    The zip holds:
      competition.yaml     one phase, one task, a leaderboard column per aggregate
                           (key, title, sorting asc/desc, precision)
      scoring_program.zip  metadata.yaml (command: python3 -m evaluation.codabench
                           /app/input /app/output) + the evaluation package and the
                           torch-free parts of fmuia it imports
      reference_data.zip   the labels root
      logo.png, overview.md, evaluation.md, terms.md
      scoring_image.Dockerfile  builds the docker image named in competition.yaml
                           (Codabench's stock images run Python 3.9: too old)

    \b
    Examples:
      fmuia codabench bundle --labels data/labels --out fm_uia_bundle.zip
      fmuia codabench bundle --labels data/labels --out b.zip --docker-image myorg/fmuia-score:1.0
    """
    from evaluation.codabench import DEFAULT_DOCKER_IMAGE, build_bundle

    out = build_bundle(labels, out_zip, title=title, docker_image=docker_image or DEFAULT_DOCKER_IMAGE, start=start, execution_time_limit=time_limit)
    click.echo(f"bundle written to {out} ({out.stat().st_size / 1e6:.1f} MB): upload it on Codabench (Benchmarks > Upload)")
    click.echo(
        f"scoring docker image: {docker_image or DEFAULT_DOCKER_IMAGE} (must exist on Docker Hub; "
        "build it from scoring_image.Dockerfile inside the bundle)"
    )
