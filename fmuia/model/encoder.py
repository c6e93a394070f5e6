"""The shared encoder: any timm backbone in ``features_only`` mode. Never hand-written.

What this module adds to timm:

* the input size reaches the families that need it (``img_size``, and ``dynamic_img_size`` where the
  family has it: ViT, Swin, ...; Hiera and MaxViT take ``img_size`` only; CNNs take neither);
  :func:`check_input_size` refuses a size a backbone cannot take with the sizes that work near it,
  found by running the backbone on PyTorch's ``meta`` device (no memory, no weights, ~0.1-0.5 s);
  a single-scale encoder (plain ViT) takes any size, run at the next multiple of its patch
  (:func:`fitted_size`; the network resizes its input there);
* every feature map comes out NCHW: the layout timm declares (``output_fmt``: NHWC for Swin and
  MambaOut, NLC token maps) is converted once, by a forward hook on the encoder, so the state dict
  keys stay timm's own;
* ``--weights FILE`` loads a local state dict of the timm classification model (as users download
  it; passed through the family's own ``checkpoint_filter_fn``, which resamples position embeddings
  and relative-position tables to the chosen size) or of the feature extractor, and refuses a file
  that does not cover every encoder tensor (timm alone loads such files non-strictly, silently).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fmuia.errors import FmuiaError

PRETRAINED_CHOICES = ("none", "imagenet")

# keyword sets tried in order when a size is given: timm raises TypeError for a keyword a family lacks
_SIZE_KWARGS = ("img_size", "dynamic_img_size")


def _timm():
    # Deferred: importing timm takes ~1.7 s (measured, after torch); importing the model layer
    # (checkpoint reading, predict_with_model with a custom network) stays at ~10 ms without it.
    import timm

    return timm


def check_backbone_name(backbone: str) -> None:
    """An :class:`FmuiaError` with similar names when ``backbone`` is not a timm model."""
    timm = _timm()
    if not isinstance(backbone, str) or not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone}*")[:8] if isinstance(backbone, str) else []
        hint = f"; similar names: {', '.join(close)}" if close else "; see timm.list_models()"
        raise FmuiaError(f"--backbone {backbone!r}: not a timm model name{hint}")


def create_timm(backbone: str, *, img_size: int | None = None, features: bool = True,
                out_indices: int | Sequence[int] | None = None, backbone_kwargs: dict | None = None,
                **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``img_size`` (and ``dynamic_img_size=True``) passed where the family takes them."""
    timm = _timm()
    kw = dict(backbone_kwargs or {})
    kw.update(timm_kwargs)
    if features:
        kw["features_only"] = True
        if out_indices is not None:
            kw["out_indices"] = out_indices if isinstance(out_indices, int) else tuple(out_indices)
    tries: list[dict] = [{}]
    if img_size is not None:
        tries = [{"img_size": img_size, "dynamic_img_size": True}, {"img_size": img_size}, {}]
    for i, size_kw in enumerate(tries):
        try:
            return timm.create_model(backbone, **kw, **size_kw)
        except TypeError as exc:
            rejected = [k for k in size_kw if f"'{k}'" in str(exc)]
            if not rejected or i == len(tries) - 1:
                raise
        except AssertionError as exc:
            # timm's default for a ViT is its last 3 blocks: a 1- or 2-block test config takes the last one
            if not (features and out_indices is None and "last-n" in str(exc)):
                raise
            return create_timm(backbone, img_size=img_size, features=features, out_indices=1,
                               backbone_kwargs=backbone_kwargs, **timm_kwargs)
    raise AssertionError("unreachable")


# --- layouts --------------------------------------------------------------------------------------

def _fmt_name(fmt: Any) -> str:
    return str(getattr(fmt, "value", fmt) or "NCHW").upper()


def feature_layouts(model: nn.Module) -> list[str]:
    """The declared layout of each feature (``NCHW``, ``NHWC``, ``NLC`` or ``NCL``)."""
    default = _fmt_name(getattr(model, "output_fmt", "NCHW"))
    return [_fmt_name(d.get("output_fmt", d.get("fmt", default))) for d in model.feature_info.get_dicts()]


def to_nchw(x: torch.Tensor, layout: str, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """One feature map as NCHW. ``grid`` (h, w) is only used for token layouts (NLC/NCL)."""
    if x.ndim == 3:
        h, w = grid
        if x.shape[1] * x.shape[2] != h * w * channels:
            raise RuntimeError(f"token map {tuple(x.shape)} does not fit a {h}x{w} grid of {channels} channels")
        if layout == "NCL":
            return x.reshape(x.shape[0], channels, h, w)
        return x.reshape(x.shape[0], h, w, channels).permute(0, 3, 1, 2)
    if x.ndim != 4:
        raise RuntimeError(f"feature of shape {tuple(x.shape)}: expected a 3-d token map or a 4-d map")
    if layout == "NHWC" and x.shape[-1] == channels:
        return x.permute(0, 3, 1, 2)
    if x.shape[1] != channels and x.shape[-1] == channels:  # declared NCHW, delivered NHWC
        return x.permute(0, 3, 1, 2)
    return x


class _ToNCHW:
    """Forward hook: the encoder's outputs, each converted from its declared layout to NCHW."""

    def __init__(self, layouts: Sequence[str], channels: Sequence[int], reductions: Sequence[int]):
        self.layouts, self.channels, self.reductions = list(layouts), list(channels), list(reductions)

    def __call__(self, module: nn.Module, inputs, output):
        h, w = inputs[0].shape[-2:]
        feats = list(output.values()) if isinstance(output, dict) else list(output)
        return [to_nchw(x, fmt, c, (math.ceil(h / r), math.ceil(w / r)))
                for x, fmt, c, r in zip(feats, self.layouts, self.channels, self.reductions, strict=True)]


class _FitToStride:
    """Forward pre-hook: images whose sides the stride does not divide, resized (bilinear) up to the next
    multiple. Resized, not zero-padded as timm's ``dynamic_img_pad`` does: the token grid then spans exactly
    the image, so the heads' bilinear upsampling to the input size and the detection targets (cells
    spread over the image) stay aligned; padded, the last tokens would reach past the image by up to a patch."""

    def __init__(self, stride: int):
        self.stride = int(stride)

    def __call__(self, module: nn.Module, args):
        x = args[0]
        h, w = x.shape[-2:]
        size = (fitted_size(h, self.stride), fitted_size(w, self.stride))
        if size == (h, w):
            return None
        return (F.interpolate(x, size=size, mode="bilinear", align_corners=False), *args[1:])


# --- sizes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """What a dry run of the backbone on the meta device found."""

    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    error: str | None  # why a forward pass at this size failed; None: it ran (or the meta device could not tell)

    @property
    def stride(self) -> int:
        return int(max(self.reductions))

    @property
    def single_scale(self) -> bool:
        return len(set(self.reductions)) == 1


_PROBES: dict[tuple, Probe | str] = {}


def _key(backbone, img_size, out_indices, backbone_kwargs) -> tuple:
    oi = out_indices if out_indices is None or isinstance(out_indices, int) else tuple(out_indices)
    return backbone, img_size, oi, repr(sorted((backbone_kwargs or {}).items()))


def probe_encoder(backbone: str, img_size: int | None, out_indices=None, backbone_kwargs: dict | None = None) -> Probe:
    """Build the feature extractor on the meta device and run one ``img_size`` image through it (cached).

    Raises :class:`FmuiaError` when timm cannot even build the model with these options.
    """
    key = _key(backbone, img_size, out_indices, backbone_kwargs)
    if key not in _PROBES:
        opts = dict(img_size=img_size, out_indices=out_indices, backbone_kwargs=backbone_kwargs, pretrained=False)
        on_meta = True
        try:
            try:
                with torch.device("meta"):
                    model = create_timm(backbone, **opts)
            except Exception as exc:  # noqa: BLE001 - an init the meta device cannot run: build it for real
                if not (isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()):
                    raise
                on_meta = False
                model = create_timm(backbone, **opts)
        except Exception as exc:  # noqa: BLE001 - timm asserts and raises many types for options it cannot take
            _PROBES[key] = f"{type(exc).__name__}: {_first_line(exc)}"
        else:
            info = model.feature_info
            error = None
            if img_size is not None and on_meta:
                try:
                    with torch.device("meta"), torch.no_grad():
                        model(torch.empty(1, 3, img_size, img_size))
                except NotImplementedError:
                    pass  # an op without a meta kernel: cannot tell here, the real run will
                except Exception as exc:  # noqa: BLE001 - timm asserts, shape RuntimeErrors: the size does not fit
                    if "meta" not in str(exc).lower():
                        error = _first_line(exc)
            _PROBES[key] = Probe(tuple(int(c) for c in info.channels()),
                                 tuple(int(r) for r in info.reduction()), error)
    found = _PROBES[key]
    if isinstance(found, str):
        raise FmuiaError(f"--backbone {backbone}: timm cannot build it with these options ({found[:300]})")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _fits(backbone, size, out_indices, backbone_kwargs, stride) -> bool:
    if size < stride or size % stride:
        return False
    try:
        return probe_encoder(backbone, size, out_indices, backbone_kwargs).error is None
    except FmuiaError:
        return False


def fitted_size(size: int, stride: int) -> int:
    """``size`` rounded up to a multiple of ``stride``: what a single-scale encoder runs at (``ceil(size / stride)``
    tokens a side)."""
    return -(-int(size) // int(stride)) * int(stride)


def check_input_size(backbone: str, img_size: int, *, out_indices=None, backbone_kwargs: dict | None = None,
                     fit: bool = False) -> int:
    """The size the encoder runs ``img_size`` x ``img_size`` images at; raise :class:`FmuiaError` (with the
    sizes that work near it) when ``backbone`` cannot take them: not a multiple of its total stride (patch
    size for a plain ViT), or a size its windows / position embeddings / mask units cannot take.

    ``fit``: a single-scale encoder (a plain ViT: patch 14 or 16) takes any size; one that its patch does not
    divide runs at :func:`fitted_size` (the network resizes its input there, see :class:`MultiTaskNet`).
    Multi-scale families (CNNs, Swin, Hiera, MaxViT) keep the rule above."""
    check_backbone_name(backbone)
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 16:
        raise FmuiaError(f"--img-size {img_size!r}: expected an integer of at least 16")
    try:
        probe = probe_encoder(backbone, img_size, out_indices, backbone_kwargs)
    except FmuiaError:
        probe = probe_encoder(backbone, None, out_indices, backbone_kwargs)  # the size broke the build
        probe = Probe(probe.channels, probe.reductions, f"timm cannot build {backbone} for {img_size} px")
    stride = probe.stride
    if img_size % stride == 0 and probe.error is None:
        return img_size
    if fit and probe.single_scale and img_size % stride:
        up = fitted_size(img_size, stride)
        if _fits(backbone, up, out_indices, backbone_kwargs, stride):
            return up
    reason = (f"needs a multiple of {stride} (its total stride)" if img_size % stride
              else f"cannot take it ({probe.error})")
    base = img_size // stride * stride
    below = next((s for s in range(base, max(stride, base - 8 * stride) - 1, -stride)
                  if s != img_size and _fits(backbone, s, out_indices, backbone_kwargs, stride)), None)
    above = next((s for s in range(base + stride, base + 9 * stride, stride)
                  if _fits(backbone, s, out_indices, backbone_kwargs, stride)), None)
    near = [str(s) for s in (below, above) if s is not None]
    hint = f"; sizes that work near it: {', '.join(near)}" if near else ""
    raise FmuiaError(f"--img-size {img_size}: backbone {backbone} {reason}{hint}")


def format_indices(out_indices) -> str:
    """``out_indices`` as the ``--out-indices`` flag writes it: ``4`` or ``2,5,8,11``."""
    if out_indices is None or isinstance(out_indices, int):
        return str(out_indices)
    return ",".join(str(i) for i in out_indices)


def feature_modules(backbone: str, img_size: int | None = None, backbone_kwargs: dict | None = None) -> list[str] | None:
    """The module names of every feature map timm can take from ``backbone`` (``blocks.0`` ... for a ViT,
    its stages for a CNN), in order: what ``out_indices`` indexes. ``None`` when timm's model lists none."""
    try:
        info = reference_model(backbone, img_size, backbone_kwargs).feature_info
    except Exception:  # noqa: BLE001 - a model timm cannot build with these options: probe_encoder reports it
        return None
    if not info:
        return None
    return [str(d.get("module", i)) for i, d in enumerate(info)]


def check_out_indices(backbone: str, out_indices, *, img_size: int | None = None,
                      backbone_kwargs: dict | None = None) -> None:
    """Raise :class:`FmuiaError` naming the indices ``backbone`` has when timm cannot take ``out_indices``
    (timm's meaning: an integer n takes the last n feature maps; a list, those maps, negative from the end)."""
    if out_indices is None:
        return
    try:
        probe_encoder(backbone, img_size, out_indices, backbone_kwargs)
        return
    except FmuiaError as exc:
        try:
            probe_encoder(backbone, img_size, None, backbone_kwargs)
        except FmuiaError:
            return  # not the indices: the size or backbone_kwargs, reported by check_input_size
        names = feature_modules(backbone, img_size, backbone_kwargs)
        if names is None:
            raise FmuiaError(f"--out-indices {format_indices(out_indices)}: {exc.message}") from None
    n = len(names)
    where = names[0] if n == 1 else f"{names[0]} ... {names[-1]}"
    raise FmuiaError(f"--out-indices {format_indices(out_indices)}: backbone {backbone} has {n} feature maps to "
                     f"take ({where}): indices 0 to {n - 1} (or -{n} to -1), or one integer N from 1 to {n} "
                     f"for the last N")


# --- names: encoder tensors <-> the timm classification model's --------------------------------

def original_name(name: str, known: Any) -> str | None:
    """The classification model's name for an encoder tensor ``name`` (``None`` if none is in ``known``).

    timm's feature wrappers rename: ``FeatureGetterNet`` (ViT, Hiera) nests the model as ``model.``;
    ``FeatureListNet`` with ``flatten_sequential`` turns ``stages.0`` into ``stages_0``.
    """
    cands = [name]
    if name.startswith("model."):
        cands.append(name[len("model."):])
    for cand in list(cands):
        first, _, rest = cand.partition(".")
        cands += [f"{first[:i]}.{first[i + 1:]}" + (f".{rest}" if rest else "")
                  for i, ch in enumerate(first) if ch == "_"]
    return next((c for c in cands if c in known), None)


_REFS: dict[tuple, nn.Module] = {}


def reference_model(backbone: str, img_size: int | None, backbone_kwargs: dict | None = None) -> nn.Module:
    """The timm classification model on the meta device (names, ``group_matcher``, ``no_weight_decay``; cached)."""
    key = _key(backbone, img_size, None, backbone_kwargs)
    if key not in _REFS:
        with torch.device("meta"):
            _REFS[key] = create_timm(backbone, img_size=img_size, features=False,
                                     backbone_kwargs=backbone_kwargs, pretrained=False)
    return _REFS[key]


# --- weights files --------------------------------------------------------------------------------

def _resample_pos_embeds(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """Square absolute position embeddings [1, P+N, C] resampled to the model's grid (families whose
    filter does not: Hiera). P (prefix tokens) is the count that makes both grids square."""
    from timm.layers import resample_abs_pos_embed

    for k, v in list(sd.items()):
        t = target.get(k)
        if t is None or "pos_embed" not in k or v.ndim != 3 or t.ndim != 3 or v.shape == t.shape:
            continue
        for p in range(0, 9):
            old, new = math.isqrt(v.shape[1] - p), math.isqrt(t.shape[1] - p)
            if old * old == v.shape[1] - p and new * new == t.shape[1] - p and v.shape[2] == t.shape[2]:
                sd[k] = resample_abs_pos_embed(v, new_size=(new, new), old_size=(old, old), num_prefix_tokens=p,
                                               verbose=False)
                break


def load_weights_file(encoder: nn.Module, backbone: str, path: str | os.PathLike, *, img_size: int | None = None,
                      backbone_kwargs: dict | None = None) -> str:
    """Load a local weights file into ``encoder``; returns ``"features"`` or ``"classification"`` (which kind it was).

    Every encoder tensor must come from the file (a missing BatchNorm ``num_batches_tracked`` excepted).
    """
    timm = _timm()
    path = Path(path)

    def fail(why: str) -> FmuiaError:
        return FmuiaError(f"--weights {path}: could not load it into timm model {backbone!r} ({why}); "
                          f"expected that model's weights (a state dict of the classification model or of its "
                          f"feature extractor, .safetensors/.pth/.bin)")

    try:
        raw = timm.models.load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - pickle, safetensors and zip errors: not a weights file
        raise fail(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise fail("not a dict of tensors")
    own = encoder.state_dict()

    def optional(k: str) -> bool:
        return k.endswith("num_batches_tracked")

    # 1. the feature extractor's own state dict (or an fmuia checkpoint's encoder part)
    for prefix in ("", "encoder.", "module."):
        sub = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        if all(k in sub or optional(k) for k in own):
            wrong = [k for k in own if k in sub and sub[k].shape != own[k].shape]
            if wrong:
                k = wrong[0]
                raise fail(f"{len(wrong)} tensor(s) with another shape, e.g. {k}: file {list(sub[k].shape)}, "
                           f"model {list(own[k].shape)}")
            encoder.load_state_dict({k: sub.get(k, own[k]) for k in own})
            return "features"

    # 2. the classification model's state dict, through the family's checkpoint filter
    ref = create_timm(backbone, img_size=img_size, features=False, backbone_kwargs=backbone_kwargs, pretrained=False)
    sd = dict(raw)
    module = importlib.import_module(timm.models.model_entrypoint(backbone).__module__)
    filt = getattr(module, "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            try:
                sd = filt(sd, ref)
            except TypeError:
                sd = filt(sd)
        except Exception as exc:  # noqa: BLE001 - a foreign dict makes filters fail in many ways
            raise fail(f"timm's checkpoint filter rejected it: {type(exc).__name__}: {_first_line(exc)}") from exc
    target = ref.state_dict()
    _resample_pos_embeds(sd, target)
    del ref
    mapped, missing, wrong = {}, [], []
    for k, v in own.items():
        name = original_name(k, sd)
        if name is None:
            if optional(k):
                mapped[k] = v
            else:
                missing.append(k)
        elif sd[name].shape != v.shape:
            wrong.append((k, list(sd[name].shape), list(v.shape)))
        else:
            mapped[k] = sd[name]
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(own)} encoder tensors not in the file, e.g. {', '.join(missing[:3])}")
        if wrong:
            k, a, b = wrong[0]
            parts.append(f"{len(wrong)} with another shape, e.g. {k}: file {a}, model {b}")
        raise fail("; ".join(parts))
    encoder.load_state_dict(mapped)
    return "classification"


# --- the encoder ------------------------------------------------------------------------------------

def build_encoder(backbone: str = "efficientnet_b4", pretrained: str = "none", weights: str | os.PathLike | None = None,
                  *, img_size: int | None = None, out_indices: int | Sequence[int] | None = None,
                  backbone_kwargs: dict | None = None, fit_input: bool = False) -> nn.Module:
    """Create ``timm.create_model(backbone, features_only=True)``, at ``img_size`` where the family needs it.

    ``pretrained="imagenet"`` downloads timm's default weights (an :class:`FmuiaError` suggesting
    ``--weights FILE`` when the hub is unreachable); ``weights=FILE`` loads a local timm weights
    file offline (``.pth``/``.bin``/``.safetensors``, a plain state dict of the classification model
    or of the feature extractor, see :func:`load_weights_file`); ``pretrained="none"`` starts from
    random weights. ``img_size=None`` passes no size (timm's default: what checkpoints written
    before sizes were recorded used). The returned module's outputs are NCHW (see :func:`to_nchw`);
    its ``fmuia_layouts`` attribute holds the layouts timm declared. ``fit_input``: a single-scale encoder
    (plain ViT) resizes an input its patch does not divide up to the next multiple (pass the fitted
    ``img_size``, see :func:`check_input_size`); ignored for a multi-scale one.
    """
    if pretrained not in PRETRAINED_CHOICES:
        raise FmuiaError(f"--pretrained {pretrained!r}: expected one of {', '.join(PRETRAINED_CHOICES)}")
    check_backbone_name(backbone)
    opts = dict(img_size=img_size, out_indices=out_indices, backbone_kwargs=backbone_kwargs)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FmuiaError(f"--weights {path}: file not found; expected a local timm weights file for {backbone}")
        enc = create_timm(backbone, pretrained=False, **opts)
        load_weights_file(enc, backbone, path, img_size=img_size, backbone_kwargs=backbone_kwargs)
    elif pretrained == "imagenet":
        try:
            enc = create_timm(backbone, pretrained=True, **opts)
        except OSError as exc:  # network errors are OSError subclasses
            raise FmuiaError(
                f"--pretrained imagenet: could not fetch the pretrained weights of {backbone!r} from the timm hub "
                f"({type(exc).__name__}: {_first_line(exc)[:200]}). Offline? Download the weights file elsewhere and "
                f"pass it with --weights FILE, or use --pretrained none."
            ) from exc
        except (RuntimeError, ValueError) as exc:
            raise FmuiaError(
                f"--pretrained imagenet: timm could not load its weights of {backbone!r}"
                f"{f' at {img_size} px' if img_size else ''} ({type(exc).__name__}: {_first_line(exc)[:200]}); "
                f"download the weights and pass --weights FILE (resampled to the size here), or use --pretrained none"
            ) from exc
    else:
        enc = create_timm(backbone, pretrained=False, **opts)
    info = enc.feature_info
    enc.fmuia_layouts = feature_layouts(enc)
    reductions = [int(r) for r in info.reduction()]
    if fit_input and len(set(reductions)) == 1:
        enc.register_forward_pre_hook(_FitToStride(reductions[0]))
    enc.register_forward_hook(_ToNCHW(enc.fmuia_layouts, info.channels(), reductions))
    return enc
