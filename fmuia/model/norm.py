"""Per-task batch-norm statistics for the shared encoder and decoder.

Every training batch holds one task, so BatchNorm normalizes each batch with that task's own
statistics. Plain running averages would mix all tasks, and at inference a task would be
normalized with statistics it never saw in training (measurable: a regression head that fits its
training images in train mode missed them by tens of pixels in eval mode). Here every shared
BatchNorm layer keeps one set of running statistics per task: ``task_running_mean/var [T, C]``.
Before a forward pass the current task's row is loaded into the layer's running buffers; after a
training forward pass the updated buffers are written back to that row. Affine weights stay shared.
"""

from __future__ import annotations

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


class TaskSelector:
    """Holds the index of the task being run; the hooks read it."""

    def __init__(self) -> None:
        self.index = 0


def _pre(selector: TaskSelector):
    def hook(module: _BatchNorm, inputs) -> None:
        i = selector.index
        module.running_mean.copy_(module.task_running_mean[i])
        module.running_var.copy_(module.task_running_var[i])

    return hook


def _post(selector: TaskSelector):
    def hook(module: _BatchNorm, inputs, output) -> None:
        if module.training:
            i = selector.index
            module.task_running_mean[i].copy_(module.running_mean)
            module.task_running_var[i].copy_(module.running_var)

    return hook


def attach_task_norm(module: nn.Module, num_tasks: int, selector: TaskSelector) -> int:
    """Give every BatchNorm layer in ``module`` per-task running statistics; returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None:
            m.register_buffer("task_running_mean", m.running_mean.detach().clone().unsqueeze(0).repeat(num_tasks, 1))
            m.register_buffer("task_running_var", m.running_var.detach().clone().unsqueeze(0).repeat(num_tasks, 1))
            m.register_forward_pre_hook(_pre(selector))
            m.register_forward_hook(_post(selector))
            n += 1
    return n
