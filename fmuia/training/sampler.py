"""Task-uniform batch sampling: every batch holds one task.

Each step draws a task (uniformly, or with weights), then ``batch_size`` samples of it. Under
DDP every rank draws the *same* task sequence (the task draw depends only on seed and epoch)
and takes its own disjoint slice of that task's shuffled samples, so one step trains one head
on every rank. An epoch's draws depend only on ``(seed, epoch)``: resuming at an epoch boundary
reproduces them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind

WEIGHT_MODES = ("uniform", "size", "sqrt")


def parse_task_weights(spec: str | Mapping[str, float] | None, task_sizes: Mapping[str, int], kinds: Mapping[str, TaskKind]) -> dict[str, float]:
    """Task → sampling weight.

    ``spec``: ``None``/``"uniform"`` (every task alike), ``"size"`` (proportional to its number of
    training samples), ``"sqrt"`` (to its square root), or ``"KEY=W,KEY=W"`` where KEY is a task id
    or a kind name (``segmentation=2,organ_cls=0.5``; unlisted tasks weigh 1; a task id beats
    its kind). A mapping works like the last form.
    """
    tasks = list(task_sizes)
    if spec is None or spec == "uniform":
        return {t: 1.0 for t in tasks}
    if spec == "size":
        return {t: float(task_sizes[t]) for t in tasks}
    if spec == "sqrt":
        return {t: float(np.sqrt(task_sizes[t])) for t in tasks}
    if isinstance(spec, str):
        pairs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                pairs[key.strip()] = float(value)
            except ValueError:
                raise FmuiaError(
                    f"--task-weights {spec!r}: {part!r} is not KEY=NUMBER; expected one of {', '.join(WEIGHT_MODES)} "
                    f"or a list like 'segmentation=2,organ_cls=0.5'"
                ) from None
        spec = pairs
    kind_names = {k.value for k in TaskKind}
    unknown = [k for k in spec if k not in task_sizes and k not in kind_names]
    if unknown:
        raise FmuiaError(f"--task-weights: unknown task or kind {unknown}; training tasks are {sorted(tasks)}")
    out = {}
    for t in tasks:
        w = spec.get(t, spec.get(kinds[t].value, 1.0))
        if not np.isfinite(w) or w < 0:
            raise FmuiaError(f"--task-weights: weight {w} for {t!r} must be a finite number >= 0")
        out[t] = float(w)
    if sum(out.values()) <= 0:
        raise FmuiaError("--task-weights: all weights are zero; at least one task must be sampled")
    return out


class TaskBatchSampler:
    """Yields batches of ``(dataset_index, augmentation_seed)``, one task per batch.

    ``task_indices``: task id → indices into the dataset. ``rank``/``world_size`` select this
    process's slice under DDP. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        task_indices: Mapping[str, Sequence[int]],
        batch_size: int,
        steps_per_epoch: int,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tasks = [t for t in task_indices if len(task_indices[t]) > 0]
        if not self.tasks:
            raise FmuiaError("no labelled training samples")
        self.indices = {t: np.asarray(task_indices[t], dtype=np.int64) for t in self.tasks}
        w = np.array([(weights or {}).get(t, 1.0) for t in self.tasks], dtype=np.float64)
        self.probs = w / w.sum()
        self.batch_size, self.steps_per_epoch = int(batch_size), int(steps_per_epoch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def task_sequence(self) -> list[str]:
        """The tasks of this epoch's steps (identical on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        return [self.tasks[i] for i in rng.choice(len(self.tasks), size=self.steps_per_epoch, p=self.probs)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])  # same stream on every rank
        cursor = {t: 0 for t in self.tasks}
        perms = {t: rng.permutation(self.indices[t]) for t in self.tasks}
        need = self.batch_size * self.world_size
        for step, task in enumerate(self.task_sequence()):
            pool = self.indices[task]
            picked: list[int] = []
            if len(pool) >= need and len(pool) - cursor[task] < need:
                perms[task], cursor[task] = rng.permutation(pool), 0  # keep one step's samples distinct
            while len(picked) < need:  # walk a shuffled pool; reshuffle when exhausted
                if cursor[task] >= len(pool):
                    perms[task], cursor[task] = rng.permutation(pool), 0
                take = min(need - len(picked), len(pool) - cursor[task])
                picked.extend(perms[task][cursor[task] : cursor[task] + take].tolist())
                cursor[task] += take
            mine = picked[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            base = (self.seed * 1_000_003 + self.epoch) * 100_003 + step
            yield [(int(i), int((base * 64 + self.rank) * 1024 + k) % (2**63)) for k, i in enumerate(mine)]
