"""``fmuia submission``: build, save, load, run and score challenge submission containers (docker SDK).

Thin wrappers over :mod:`submission`; the docker SDK is imported only when a subcommand runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _limit_options(f):
    """The resource-limit options shared by ``run`` and ``score``."""
    opts = [
        click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=3600, show_default=True,
                     help="Wall-clock seconds; past it the container is killed and the run reported as timed out."),
        click.option("--memory", default="16g", show_default=True,
                     help="Memory limit (also the memory+swap limit); exceeding it is reported as 'killed: memory limit'."),
        click.option("--cpus", type=click.FloatRange(min=0, min_open=True), default=None, help="CPU quota, e.g. 4 [default: none]."),
        click.option("--gpus", default="auto", show_default=True,
                     help="auto (all GPUs when the engine has the NVIDIA runtime), all, none, a count N, or device=0,1."),
        click.option("--pids-limit", "pids", type=click.IntRange(min=1), default=1024, show_default=True, help="Maximum number of processes."),
        click.option("--tmp-size", default="4g", show_default=True, help="Size of the tmpfs /tmp (counts against --memory)."),
        click.option("--user", default=None, help="Run as UID[:GID] instead of the image's own user."),
        click.option("--writable-root", is_flag=True, help="Do not make the root filesystem read-only (for images that write outside /tmp)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _limits(time_limit, memory, cpus, gpus, pids, tmp_size, user, writable_root):
    from submission.runner import Limits

    return Limits(time_limit=time_limit, memory=memory, cpus=cpus, gpus=gpus, pids=pids, tmp_size=tmp_size,
                  user=user, read_only=not writable_root)


@click.group("submission")
def submission() -> None:
    """Build, save, load, run and score challenge submission containers.

    A submission is a Docker image that reads the test folder from /input and writes the official
    prediction files to /output. These commands need a running Docker engine.

    \b
    Participants:
      fmuia submission build --checkpoint runs/r1/best.pt --tag myteam/fmuia:v1
      fmuia submission run myteam/fmuia:v1 --input data/test --output out/ --gpus all
      fmuia submission save myteam/fmuia:v1 --out myteam.tar
    Organizers:
      fmuia submission load myteam.tar
      fmuia submission score manifest.csv --input test/ --labels labels/ --out board/
    """


@submission.command("build")
@click.option("--checkpoint", required=True, type=_FILE, help="Trained checkpoint to embed (e.g. runs/r1/best.pt).")
@click.option("--tag", default="fmuia-baseline:latest", show_default=True, help="Image tag.")
@click.option("--base-image", default=None, help="Override the Dockerfile's BASE_IMAGE (e.g. pinned by digest).")
@click.option("--offline", is_flag=True,
              help="The base already holds every dependency: install only the project, with no network (pip --no-index, build network none).")
@click.option("--context", "context", type=_DIR, default=None, help="Source checkout holding the Dockerfile [default: the one fmuia runs from].")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the build output.")
def build(checkpoint: Path, tag: str, base_image: str | None, offline: bool, context: Path | None, quiet: bool) -> None:
    """Build the baseline image with CHECKPOINT embedded.

    The image runs `fmuia predict` on /input -> /output, on the GPU when present, the CPU otherwise;
    it needs no network and works with a read-only root filesystem and any UID.

    \b
    Examples:
      fmuia submission build --checkpoint runs/r1/best.pt
      fmuia submission build --checkpoint best.pt --tag team/fmuia:v2 \\
          --base-image pytorch/pytorch@sha256:<digest>
      fmuia submission build --checkpoint best.pt --base-image fmuia-test-base:latest --offline
    """
    from submission.build import build_image

    image_id = build_image(
        checkpoint, tag=tag, base_image=base_image, context=context,
        pip_args="--no-index" if offline else None, network_mode="none" if offline else None,
        log=None if quiet else click.echo,
    )
    click.echo(f"built {tag} ({image_id})")


@submission.command("save")
@click.argument("image")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Tar file to write.")
def save(image: str, out: Path) -> None:
    """Save IMAGE to a tar file (what participants upload when they submit a file).

    \b
    Example:
      fmuia submission save team/fmuia:v1 --out team.tar && gzip team.tar
    """
    from submission.build import save_image

    path = save_image(image, out)
    click.echo(f"saved {image} to {path} ({path.stat().st_size / 1e6:.1f} MB)")


@submission.command("load")
@click.argument("tar_file", type=_FILE)
def load(tar_file: Path) -> None:
    """Load an image tar file (plain or .tar.gz) into the engine; print the image id.

    \b
    Example:
      fmuia submission load team.tar.gz
    """
    from submission.build import load_image

    click.echo(load_image(tar_file))


@submission.command("run")
@click.argument("image")
@click.option("--input", "input_dir", required=True, type=_DIR, help="Test folder, mounted read-only at /input.")
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Empty folder mounted at /output; the log goes to OUTPUT.log beside it.")
@_limit_options
@click.option("--data", "data_root", type=_DIR, default=None, help="Data root for the output check [default: --input].")
@click.option("--no-check", is_flag=True, help="Skip `fmuia check` of the output.")
@click.option("--overwrite", is_flag=True, help="Empty a non-empty --output first.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the run result as JSON here.")
def run(image: str, input_dir: Path, output_dir: Path, time_limit, memory, cpus, gpus, pids, tmp_size, user,
        writable_root, data_root: Path | None, no_check: bool, overwrite: bool, json_out: Path | None) -> None:
    """Run IMAGE on a test folder the way the challenge platform does, then check its output.

    No network, read-only /input, all capabilities dropped, no-new-privileges, pids/memory/CPU limits,
    read-only root filesystem with a tmpfs /tmp, and a wall-clock limit. Any image that reads /input and
    writes /output works, including the official template (ENTRYPOINT ["python"], CMD ["model.py"]).

    Exit codes: 0 ok, 1 the submission failed (timed out, killed: memory limit, non-zero exit, invalid
    output), 2 usage error, 3 no Docker engine.

    \b
    Examples:
      fmuia submission run fmuia-baseline --input data/test --output out/
      fmuia submission run team.tar-id --input test/ --output out/ --gpus all --time-limit 1800 --memory 16g --cpus 8
    """
    from fmuia._atomic import write_json
    from submission.runner import run_submission

    result = run_submission(
        image, input_dir, output_dir, limits=_limits(time_limit, memory, cpus, gpus, pids, tmp_size, user, writable_root),
        data_root=data_root, check=not no_check, overwrite=overwrite,
    )
    if json_out:
        write_json(json_out, result.to_dict())
    for entry in result.unsafe_entries:
        click.echo(f"warning: output entry never read: {entry}", err=True)
    msg = result.status + (f": {result.reason}" if result.reason else "")
    click.echo(f"{msg} ({result.seconds:.1f} s, exit code {result.exit_code}); log: {result.log_path}")
    if not result.ok:
        sys.exit(1)


@submission.command("score")
@click.argument("manifest", type=_FILE)
@click.option("--input", "input_dir", required=True, type=_DIR, help="Hidden test folder (no labels), mounted at /input.")
@click.option("--labels", "labels_dir", required=True, type=_DIR, help="Labelled root of the same rows.")
@click.option("--out", "board_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Board folder (outputs, logs, results, leaderboard).")
@_limit_options
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=1000, show_default=True, help="Bootstrap resamples for the strict CIs.")
@click.option("--retry-failed", is_flag=True, help="Run submissions that failed before again (scored ones are always skipped).")
@click.option("--hosts", "hosts_file", type=_FILE, default=None,
              help="CSV of Docker engines: url,gpus,cpus,memory,data_path,slots [default: the local engine].")
@click.option("--slots", type=click.IntRange(min=1), default=None,
              help="Submissions at once per host [default: one per --gpus-per-run GPUs, else 1].")
@click.option("--gpus-per-run", type=click.IntRange(min=1), default=None,
              help="Pin this many GPUs (by id) to each container, one slot per group; --gpus is then ignored.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Attempts per submission when hosts fail under it.")
@click.option("--keep-images", is_flag=True, help="Leave the loaded images (and test-set volumes) on the engines.")
@click.option("--max-output", default="4g", show_default=True, help="Cap on the size of one pulled /output.")
@click.option("--progress/--no-progress", default=None, help="Live view per slot [default: when stderr is a terminal].")
def score(manifest: Path, input_dir: Path, labels_dir: Path, board_dir: Path, time_limit, memory, cpus, gpus, pids,
          tmp_size, user, writable_root, n_bootstrap: int, retry_failed: bool, hosts_file: Path | None,
          slots: int | None, gpus_per_run: int | None, max_attempts: int, keep_images: bool, max_output: str,
          progress: bool | None) -> None:
    """Run and score every submission in MANIFEST, on every slot of one or more engines; build the leaderboard.

    MANIFEST is a CSV with a header `name,image,tar`: each row gives a name and either a local image
    (tag or id) or an image tar file (relative to the manifest). Each submission is loaded on the engine
    that runs it, run with the limits below in its own slot (GPU ids, CPU set, memory share), its /output
    pulled back, checked and evaluated (strict) here; a failing one is recorded with its reason and the
    batch goes on. A host that fails hands its submissions to another (--max-attempts); every attempt
    is kept in BOARD/state.json. Re-running resumes: finished submissions are skipped; Ctrl-C stops new
    starts, kills the running containers and leaves a resumable state.

    \b
    Examples:
      printf 'name,image,tar\\nbaseline,fmuia-baseline:latest,\\nteam-b,,team-b.tar.gz\\n' > manifest.csv
      fmuia submission score manifest.csv --input test/ --labels labels/ --out board/ --time-limit 3600 --memory 16g
      fmuia submission score manifest.csv --input test/ --labels labels/ --out board/ --gpus-per-run 1
      fmuia submission score manifest.csv --input test/ --labels labels/ --out board/ --hosts hosts.csv --gpus-per-run 2
    """
    from submission.batch import BatchOptions, score_batch, summary_lines
    from submission.hosts import read_hosts

    opts = BatchOptions(hosts=read_hosts(hosts_file) if hosts_file else None, slots=slots, gpus_per_run=gpus_per_run,
                        max_attempts=max_attempts, keep_images=keep_images, max_output=max_output, progress=progress)
    try:
        out = score_batch(
            manifest, input_dir, labels_dir, board_dir,
            limits=_limits(time_limit, memory, cpus, gpus, pids, tmp_size, user, writable_root),
            options=opts, retry_failed=retry_failed, n_bootstrap=n_bootstrap, log=click.echo,
        )
    except KeyboardInterrupt as exc:
        if exc.args and isinstance(exc.args[0], dict):
            for line in summary_lines(exc.args[0]):
                click.echo(line, err=True)
            click.echo(f"interrupted: run the same command again to resume (state: {board_dir}/state.json)", err=True)
        raise
    for line in summary_lines(out):
        click.echo(line)
    click.echo(f"leaderboard in {board_dir}")
    if out["pending"]:  # no host left to finish them: the same command resumes
        sys.exit(1)
