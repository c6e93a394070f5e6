"""AdamW parameter groups: encoder (optionally layer-wise LR decay) and decoder/heads.

Weight decay follows timm's convention: none on 1-d tensors (biases, norm weights) and on the names
the timm model lists in ``no_weight_decay()`` (position embeddings, class / register tokens, ...).

Groups are built from every parameter, trainable or not, so their structure depends only on the
architecture: a frozen encoder (``requires_grad=False``, grads stay ``None``) gets no AdamW state and
no weight decay, and unfreezing it later only flips ``requires_grad`` -- the optimizer, its state dict
and an exact resume are unchanged. Empty groups are left out.

Layer decay (``layer_decay=d``): encoder layers are numbered by timm's ``group_matcher`` (stem 0,
then blocks / stages in order); layer ``i`` of ``n`` gets ``lr * d ** (n - 1 - i)``: ``lr`` is the
learning rate of the last encoder layer, the stem's is the smallest. Heads keep ``lr * head_lr_scale``.
"""

from __future__ import annotations

import fnmatch

import torch.nn as nn

from fmuia.errors import FmuiaError
from fmuia.model.encoder import original_name, reference_model


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)  # DDP


def _reference(net: nn.Module) -> nn.Module:
    cfg = net.config
    return reference_model(net.backbone, cfg.get("img_size"), cfg.get("backbone_kwargs"))


def _no_decay(name: str, param: nn.Parameter, listed: set[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name in listed


def encoder_layers(net: nn.Module) -> tuple[dict[str, int], int]:
    """``({encoder parameter name: layer id}, number of layers)`` from timm's ``group_matcher``.

    Raises :class:`FmuiaError` for a backbone whose timm model has no ``group_matcher``.
    """
    from timm.models import group_parameters

    net = _unwrap(net)
    ref = _reference(net)
    if not hasattr(ref, "group_matcher"):
        raise FmuiaError(f"--layer-decay: timm gives no layer grouping (group_matcher) for backbone {net.backbone}; "
                         "train it without --layer-decay")
    ref_layer = group_parameters(ref, ref.group_matcher(coarse=False), reverse=True)
    names = [n for n, _ in net.encoder.named_parameters()]
    raw = {}
    for n in names:
        orig = original_name(n, ref_layer)
        raw[n] = ref_layer[orig] if orig is not None else None
    ids = sorted({v for v in raw.values() if v is not None})
    if not ids:
        raise FmuiaError(f"--layer-decay: no encoder parameter of {net.backbone} matched timm's layer grouping")
    rank = {v: i for i, v in enumerate(ids)}  # the encoder may hold a subset of the model's layers (pruned)
    top = len(ids) - 1
    return {n: (rank[v] if v is not None else top) for n, v in raw.items()}, len(ids)


def param_groups(net: nn.Module, *, lr: float, head_lr_scale: float, weight_decay: float,
                 layer_decay: float | None = None, decay_exclusions: bool = True) -> list[dict]:
    """AdamW parameter groups for a :class:`~fmuia.model.MultiTaskNet` (or its DDP wrapper).

    Every group has ``params``, ``lr``, ``weight_decay``, ``lr_scale`` (its lr over ``lr``) and
    ``name``: ``"encoder"`` / ``"encoder.no_decay"``, or with layer decay ``"encoder.layer_<i>"`` /
    ``"encoder.layer_<i>.no_decay"``; then ``"heads"`` / ``"heads.no_decay"`` (pyramid, FPN and heads).
    Encoder groups come first. ``decay_exclusions=False`` gives the two groups of runs trained before
    this module (``encoder``, ``heads``, weight decay on everything), to resume them.
    """
    net = _unwrap(net)
    if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
        raise FmuiaError(f"--layer-decay {layer_decay}: expected a number in (0, 1]")
    head_lr = lr * head_lr_scale
    decoder = [(n, p) for n, p in net.named_parameters() if not n.startswith("encoder.")]
    encoder = list(net.encoder.named_parameters())
    if not decay_exclusions:
        if layer_decay is not None:
            raise FmuiaError("--layer-decay needs the per-layer groups (decay_exclusions=True)")
        return [
            {"params": [p for _, p in encoder], "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0, "name": "encoder"},
            {"params": [p for _, p in decoder], "lr": head_lr, "weight_decay": weight_decay, "lr_scale": head_lr_scale,
             "name": "heads"},
        ]
    ref = _reference(net)
    try:
        patterns = set(ref.no_weight_decay())
    except (AttributeError, TypeError):
        patterns = set()
    ref_names = {n for n, _ in ref.named_parameters()}
    listed = set()  # encoder names whose timm name no_weight_decay() lists (patterns may hold wildcards)
    for n, _ in encoder:
        orig = original_name(n, ref_names)
        if orig is not None and any(fnmatch.fnmatchcase(orig, pat) for pat in patterns):
            listed.add(n)

    groups: dict[str, dict] = {}

    def add(name: str, param: nn.Parameter, group_lr: float, scale: float, no_decay: bool) -> None:
        key = name + (".no_decay" if no_decay else "")
        g = groups.setdefault(key, {"params": [], "lr": group_lr, "weight_decay": 0.0 if no_decay else weight_decay,
                                    "lr_scale": scale, "name": key})
        g["params"].append(param)

    if layer_decay is None:
        layer_of, count, prefix = {n: 0 for n, _ in encoder}, 1, "encoder"
    else:
        (layer_of, count), prefix = encoder_layers(net), "encoder.layer_"
    for i in range(count):  # groups in layer order, each with decay before no decay
        scale = 1.0 if layer_decay is None else float(layer_decay) ** (count - 1 - i)
        name = prefix if layer_decay is None else f"{prefix}{i}"
        for no_decay in (False, True):
            for n, p in encoder:
                if layer_of[n] == i and _no_decay(n, p, listed) == no_decay:
                    add(name, p, lr * scale, scale, no_decay)
    for no_decay in (False, True):
        for n, p in decoder:
            if _no_decay(n, p, set()) == no_decay:
                add("heads", p, head_lr, head_lr_scale, no_decay)
    return list(groups.values())
