"""Challenge submissions as Docker images: build the baseline, save/load tar files, run a container the
way a trusted challenge platform does (no network, read-only input, resource limits, wall-clock limit),
and score a whole manifest of submissions into a leaderboard.

Library entry points (the ``fmuia submission`` CLI is a thin layer over them):

* :func:`submission.build.build_image`, :func:`~submission.build.save_image`, :func:`~submission.build.load_image`
* :func:`submission.runner.run_submission` → :class:`~submission.runner.RunResult`
* :func:`submission.score.score_manifest`: one engine, one submission at a time (``score_batch`` with one host, one slot)
* :func:`submission.batch.score_batch`: every slot of one or several engines at once (what
  ``fmuia submission score`` runs): :mod:`submission.hosts` (hosts file, slots), :mod:`submission.worker`
  (one engine through its API), :mod:`submission.transfer` (``put_archive`` / safe ``get_archive``)

Nothing here assumes our own image: any image that reads ``/input`` and writes ``/output`` runs the same way.
"""

from __future__ import annotations

__all__ = ["batch", "build", "engine", "hosts", "runner", "score", "transfer", "worker"]
