"""Synthetic FM_UIA data in exactly the official layout (numpy + Pillow only).

``synthesize(out_dir)`` writes a data root for every registered task: ultrasound-like images
(multiplicative, laterally correlated speckle; a sector or linear field of view that is black
outside; depth attenuation; hypo-/hyper-echoic structures with soft edges) whose labels are
derived from what is drawn:

* segmentation: the mask is the drawn structure (nested or adjacent structures for multi-class);
* classification: the class decides what is drawn (lesion type, lung artefacts, the number and
  brightness of structures, or for the ``*_pos_cls`` tasks a left/right-dependent position, so
  a horizontal flip changes the class);
* detection: the box is the bounding box of the drawn lesion;
* regression: the landmarks sit on drawn bright structures.

Folder names carry the real data's quirks (spaces, commas, ``+``, parentheses, a non-breaking
space) and images come as .png, .jpg and .bmp of many sizes. Every image is made by a generator
seeded by ``(seed, task, index)``: the same seed gives byte-identical files, and a ``tasks=``
subset gives the same images as the full set.

With ``split=True`` the output holds ``train/`` (labelled), ``test/`` (hidden-test root: CSVs
without label columns, segmentation rows keep ``mask_path`` but no mask files) and ``labels/``
(the labelled root of exactly the test rows).

Example::

    from fmuia.dataset.synth import synthesize
    root = synthesize("data/synth", per_task=20, seed=0)
    split = synthesize("data/split", per_task=12, split=True)   # split/train, split/test, split/labels
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fmuia.dataset.masks import encode_mask_png
from fmuia.dataset.schema import BOX_COLUMNS, CSV_DIR
from fmuia.errors import FmuiaError
from fmuia.tasks import TaskKind, TaskSpec, list_tasks

__all__ = ["synthesize", "dataset_folder", "SPLIT_DIRS"]

SPLIT_DIRS = ("train", "test", "labels")
KIND_DIRS = {
    TaskKind.SEGMENTATION: "Segmentation",
    TaskKind.CLASSIFICATION: "Classification",
    TaskKind.DETECTION: "Detection",
    TaskKind.REGRESSION: "Regression",
}
_NUMBER_WORDS = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine", 10: "Ten"}


# --------------------------------------------------------------------------------------------
# Per-task appearance: dataset folder (with the real data's quirks), format, probe, look.
# This is data about how each synthetic dataset looks, not behaviour: unknown tasks get a default.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Style:
    dataset: str
    ext: str | tuple[str, ...] = ".png"  # a tuple: each image picks one (merged sources)
    probe: str = "sector"  # "sector" (curvilinear/phased) or "linear"
    look: str = ""  # a key of the kind's look table; "" = the kind's default
    stem: str = "{i:0{w}d}"  # image file stem; ``i`` is 1-based
    mask_stem: str = "{i:0{w}d}"
    rgb: bool = False  # write 3-channel images (as scanners often export)
    params: dict = field(default_factory=dict)


_STYLES: dict[str, _Style] = {
    # segmentation
    "breast_lesion": _Style("BUSI (breast lesions)", ".png", "linear", "lesion", "lesion ({i})", "lesion ({i})_mask", params={"irregular": 0.18}),
    "cardiac_multi": _Style("CAMUS, apical 4ch", ".bmp", "phased", "cardiac"),
    "carotid_artery": _Style("carotid artery+CCA", ".jpg", "linear", "vessel", rgb=True),
    "cervix": _Style("cervix", ".png", "sector", "lesion", params={"level": 0.95, "elong": (0.35, 0.55)}),
    "cervix_multi": _Style("cervix multi (3 class)", ".png", "sector", "nested"),
    "fetal_abdomen_multi": _Style("fetal abdomen, multi-organ", ".png", "sector", "children"),
    "fetal_head": _Style("HC18 fetal head", ".png", "sector", "head", "{i:0{w}d}_HC", "{i:0{w}d}_HC_Annotation"),
    "fetal_heart": _Style("fetal heart", ".jpg", "sector", "lesion", params={"level": 0.08, "ring": True}),
    "head_symphysis_multi": _Style("PSFH head+symphysis", ".png", "sector", "ps_head"),
    "lung": _Style("lung", ".png", "linear", "lesion", params={"level": 1.05, "irregular": 0.12}),
    "ovary_tumor": _Style("ovary tumor (MMOTU)", ".jpg", "sector", "lesion", params={"level": 0.07, "irregular": 0.1}),
    "thyroid_nodule": _Style("thyroid nodule, TN3K", ".jpg", "linear", "lesion", params={"level": 0.18, "irregular": 0.15}),
    # classification
    "breast_2cls": _Style("breast 2cls (BUSI+UDIAT)", (".png", ".bmp"), "linear", "breast"),
    "breast_3cls": _Style("BUSI 3 class", ".png", "linear", "breast", "case ({i})"),
    "fetal_head_pos_cls": _Style("fetal head position", ".bmp", "sector", "position", params={"marker": "head"}),
    "fetal_plane_cls": _Style("fetal planes, FETAL_PLANES_DB", ".jpg", "sector", "combo", rgb=True),
    "fetal_sacral_pos_cls": _Style("fetal sacral position", ".png", "sector", "position", params={"marker": "spine"}),
    "liver_lesion_2cls": _Style("liver lesion", ".png", "sector", "liver"),
    "lung_2cls": _Style("lung 2cls", ".jpg", "linear", "lung"),
    "lung_disease_3cls": _Style("COVID-BLUES (lung disease)", (".png", ".jpg"), "sector", "lung"),
    "organ_cls": _Style("organ cls + abdomen", ".bmp", "sector", "combo"),
    # detection
    "spinal_cord_injury_loc": _Style("spinal cord injury", ".png", "linear", "cord"),
    "thyroid_nodule_det": _Style("thyroid nodule (det)", ".jpg", "linear", "dark"),
    "uterine_fibroid_det": _Style("uterine fibroid\xa0ultrasound images_871", ".jpg", "sector", "dark", params={"level": 0.16}),
    # regression
    "FUGC": _Style("FUGC", ".png", "sector", "canal"),
    "IUGC": _Style("IUGC, intrapartum", ".png", "sector", "ps_head"),
    "fetal_femur": _Style("fetal femur (HC+FL)", ".png", "sector", "rod"),
}


def _style(spec: TaskSpec) -> _Style:
    return _STYLES.get(spec.task_id) or _Style(spec.task_id)


def dataset_folder(spec: TaskSpec) -> str:
    """The data-root-relative folder of a task's synthetic dataset (e.g. ``Segmentation/Two/cervix``)."""
    parts = [KIND_DIRS[spec.kind]]
    if spec.kind is TaskKind.SEGMENTATION:
        parts.append(_NUMBER_WORDS.get(spec.num_classes, str(spec.num_classes)))
    parts.append(_style(spec).dataset)
    return "/".join(parts)


# --------------------------------------------------------------------------------------------
# The scene: an echogenicity map, a label mask and the field of view, drawn into by looks.
# --------------------------------------------------------------------------------------------
class _Region:
    """A soft shape on a window of the image: ``alpha`` in [0, 1] (0.5 = the boundary)."""

    __slots__ = ("ys", "xs", "alpha")

    def __init__(self, ys: slice, xs: slice, alpha: np.ndarray):
        self.ys, self.xs, self.alpha = ys, xs, alpha


class _Scene:
    def __init__(self, rng: np.random.Generator, h: int, w: int, probe: str):
        self.rng, self.h, self.w = rng, h, w
        self.s = float(min(h, w))
        self.tissue = np.empty((h, w), np.float32)
        self.mask = np.zeros((h, w), np.uint8)
        self._xs = np.arange(w, dtype=np.float32) + 0.5  # pixel centres
        self._ys = np.arange(h, dtype=np.float32) + 0.5
        self._fov_setup(probe)
        self._background()

    # field of view ---------------------------------------------------------------------------
    def _fov_setup(self, probe: str) -> None:
        rng, h, w = self.rng, self.h, self.w
        self.probe = "linear" if probe == "linear" else "sector"
        if self.probe == "linear":
            self.x0 = w * rng.uniform(0.04, 0.12)
            self.x1 = w - w * rng.uniform(0.04, 0.12)
            self.y0 = h * rng.uniform(0.03, 0.08)
            self.y1 = h - h * rng.uniform(0.02, 0.06)
        else:
            narrow = probe == "phased"
            self.ax = w / 2.0
            self.ay = -h * (rng.uniform(0.02, 0.06) if narrow else rng.uniform(0.2, 0.35))
            self.r_in = -self.ay + h * rng.uniform(0.02, 0.06)
            self.r_out = -self.ay + h * rng.uniform(0.93, 0.99)
            limit = math.asin(min(0.99, 0.48 * w / self.r_out))
            self.theta = min(limit, math.radians(rng.uniform(38, 45) if narrow else rng.uniform(30, 40)) + (0.2 if narrow else 0.0))
            self.theta = min(self.theta, limit)

    def to_px(self, u: float, v: float) -> tuple[float, float]:
        """Field-of-view coordinates (u: -1 left .. 1 right, v: 0 top .. 1 bottom) to pixels."""
        if self.probe == "linear":
            return self.x0 + (u + 1) / 2 * (self.x1 - self.x0), self.y0 + v * (self.y1 - self.y0)
        ang = u * self.theta
        r = self.r_in + v * (self.r_out - self.r_in)
        return self.ax + r * math.sin(ang), self.ay + r * math.cos(ang)

    def fov(self) -> np.ndarray:
        xx, yy = self._xs[None, :], self._ys[:, None]
        if self.probe == "linear":
            return ((xx >= self.x0) & (xx <= self.x1)) & ((yy >= self.y0) & (yy <= self.y1))
        dx, dy = xx - self.ax, yy - self.ay
        r = np.sqrt(dx * dx + dy * dy)
        ang = np.abs(np.arctan2(dx, dy))
        return (r >= self.r_in) & (r <= self.r_out) & (ang <= self.theta)

    def _background(self) -> None:
        rng, h, w = self.rng, self.h, self.w
        base = rng.uniform(0.42, 0.52)
        coarse = rng.normal(0.0, 0.07, size=(5, 6)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR))
        self.tissue[:] = base + smooth

    # shapes ------------------------------------------------------------------------------------
    def _window(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice] | None:
        x0, x1 = max(0, int(math.floor(cx - rx))), min(self.w, int(math.ceil(cx + rx)) + 1)
        y0, y1 = max(0, int(math.floor(cy - ry))), min(self.h, int(math.ceil(cy + ry)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def _ellipse_r(self, cx, cy, a, b, angle, irregular, pad):
        """Normalised elliptical radius (1 on the boundary) on a window around the shape."""
        rng = self.rng
        amps = rng.uniform(0, irregular, size=4) / np.arange(1, 5) if irregular > 0 else np.zeros(4)
        phases = rng.uniform(0, 2 * np.pi, size=4)
        reach = max(a, b) * (1 + float(amps.sum())) + pad
        win = self._window(cx, cy, reach, reach)
        if win is None:
            return None, None
        ys, xs = win
        dx = self._xs[xs][None, :] - cx
        dy = self._ys[ys][:, None] - cy
        c, s = math.cos(angle), math.sin(angle)
        xr = (dx * c + dy * s) / a
        yr = (-dx * s + dy * c) / b
        r = np.sqrt(xr * xr + yr * yr)
        if irregular > 0:
            phi = np.arctan2(yr, xr)
            wobble = 1.0 + sum(float(amps[k]) * np.cos((k + 2) * phi + float(phases[k])) for k in range(4))
            r = r / wobble
        return win, r

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0, irregular: float = 0.0, edge: float = 1.5) -> _Region | None:
        win, r = self._ellipse_r(cx, cy, a, b, angle, irregular, 3 * edge)
        if win is None:
            return None
        alpha = np.clip((1.0 - r) * min(a, b) / edge + 0.5, 0.0, 1.0)
        return _Region(win[0], win[1], alpha)

    def ring(self, cx: float, cy: float, a: float, b: float, thick: float, angle: float = 0.0, edge: float = 1.2) -> _Region | None:
        """A band of width ``thick`` just inside the ellipse boundary."""
        win, r = self._ellipse_r(cx, cy, a, b, angle, 0.0, 3 * edge)
        if win is None:
            return None
        m = min(a, b)
        k = max(0.05, (m - thick) / m)
        outer = np.clip((1.0 - r) * m / edge + 0.5, 0.0, 1.0)
        inner = np.clip((1.0 - r / k) * m * k / edge + 0.5, 0.0, 1.0)
        return _Region(win[0], win[1], outer * (1.0 - inner))

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], width: float, edge: float = 1.2) -> _Region | None:
        """A rounded segment from ``p0`` to ``p1`` of the given width."""
        (x0, y0), (x1, y1) = p0, p1
        pad = width / 2 + 3 * edge
        win = self._window((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2 + pad, abs(y1 - y0) / 2 + pad)
        if win is None:
            return None
        ys, xs = win
        px = self._xs[xs][None, :] - x0
        py = self._ys[ys][:, None] - y0
        vx, vy = x1 - x0, y1 - y0
        n2 = vx * vx + vy * vy
        t = np.clip((px * vx + py * vy) / n2, 0.0, 1.0) if n2 > 0 else np.zeros_like(px * py)
        d = np.sqrt((px - t * vx) ** 2 + (py - t * vy) ** 2)
        alpha = np.clip((width / 2 - d) / edge + 0.5, 0.0, 1.0)
        return _Region(ys, xs, alpha)

    # drawing -----------------------------------------------------------------------------------
    def paint(self, reg: _Region | None, level: float, opacity: float = 1.0) -> None:
        if reg is not None:
            t = self.tissue[reg.ys, reg.xs]
            t += (level - t) * (reg.alpha * opacity)

    def scale(self, reg: _Region | None, factor: float) -> None:
        """Multiply echogenicity (acoustic shadow < 1 < posterior enhancement)."""
        if reg is not None:
            self.tissue[reg.ys, reg.xs] *= 1.0 + (factor - 1.0) * reg.alpha

    def label(self, reg: _Region | None, cls: int) -> None:
        if reg is not None:
            self.mask[reg.ys, reg.xs][reg.alpha >= 0.5] = cls

    def draw(self, reg: _Region | None, level: float, cls: int | None = None) -> _Region | None:
        self.paint(reg, level)
        if cls is not None:
            self.label(reg, cls)
        return reg

    def layers(self, n: int = 2) -> None:
        """Bright horizontal tissue layers near the top (skin, fascia)."""
        for _ in range(n):
            v = self.rng.uniform(0.02, 0.2)
            y = self.to_px(0.0, v)[1]
            self.paint(self.capsule((0, y), (self.w, y + self.rng.uniform(-4, 4)), self.s * self.rng.uniform(0.01, 0.025)), 0.9, 0.7)

    # finishing ---------------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        """Speckle, attenuation, gain and field of view: an ``H x W`` uint8 image."""
        rng, h, w = self.rng, self.h, self.w
        taps = int(rng.integers(2, 5))  # grain size varies between scanners
        ray = rng.rayleigh(math.sqrt(2.0 / math.pi), size=(h + 1, w + taps - 1)).astype(np.float32)  # mean 1
        lateral = sum(ray[:, j : j + w] for j in range(taps)) / taps  # laterally elongated grains
        speckle = 0.7 * lateral[:-1] + 0.3 * lateral[1:]  # a little axial correlation
        depth = self._ys[:, None] / h
        atten = np.exp(-rng.uniform(0.2, 0.5) * depth).astype(np.float32)
        gain = rng.uniform(160.0, 190.0)
        img = np.clip(self.tissue, 0.0, None) * speckle * atten * gain
        gamma = rng.uniform(0.85, 1.15)  # display map
        img = 255.0 * (np.clip(img, 0.0, 255.0) / 255.0) ** gamma
        fov = self.fov()
        img = np.where(fov, np.clip(img, 0.0, 255.0), 0.0)
        self.mask[~fov] = 0
        return img.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Looks: one function per appearance, grouped in a table per kind.
# --------------------------------------------------------------------------------------------
def _u(rng, lo=-0.5, hi=0.5):
    return float(rng.uniform(lo, hi))


_DARK, _BRIGHT = 0.08, 1.15


# segmentation: draw and label classes 1..C-1 -----------------------------------------------
def _seg_lesion(sc: _Scene, n: int, p: dict) -> None:
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng), rng.uniform(0.35, 0.65))
    a = sc.s * rng.uniform(0.09, 0.18)
    lo, hi = p.get("elong", (0.55, 1.0))
    b = a * rng.uniform(lo, hi)
    level = p.get("level", _DARK)
    reg = sc.ellipse(cx, cy, a, b, rng.uniform(-0.5, 0.5), p.get("irregular", 0.06))
    if p.get("ring"):
        sc.paint(sc.ring(cx, cy, a * 1.12, b * 1.12, sc.s * 0.025), 1.2)
    if level < 0.3:  # posterior acoustic enhancement below a cyst
        sc.scale(sc.capsule((cx, cy), (cx, sc.h), 2 * min(a, b)), 1.35)
    sc.draw(reg, level, 1)
    if n > 2:  # more classes than this look knows: nest them
        _nest(sc, cx, cy, a, b, 2, n, level)


def _nest(sc: _Scene, cx: float, cy: float, a: float, b: float, cls: int, n: int, parent_level: float) -> None:
    rng = sc.rng
    while cls < n:
        f = rng.uniform(0.5, 0.62)
        cx += rng.uniform(-0.15, 0.15) * a
        cy += rng.uniform(-0.15, 0.15) * b
        a, b = a * f, b * f
        level = _BRIGHT if parent_level < 0.5 else _DARK
        sc.draw(sc.ellipse(cx, cy, a, b, rng.uniform(-0.4, 0.4)), level, cls)
        parent_level, cls = level, cls + 1


def _seg_nested(sc: _Scene, n: int, p: dict) -> None:
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng, -0.3, 0.3), rng.uniform(0.45, 0.6))
    a = sc.s * rng.uniform(0.2, 0.26)
    b = a * rng.uniform(0.6, 0.85)
    sc.draw(sc.ellipse(cx, cy, a, b, rng.uniform(-0.4, 0.4), 0.05), 0.95, 1)
    _nest(sc, cx, cy, a, b, 2, n, 0.95)


def _seg_children(sc: _Scene, n: int, p: dict) -> None:
    """Class 1 a large body; classes 2..C-1 disjoint organs inside it (fetal abdomen)."""
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng, -0.2, 0.2), rng.uniform(0.45, 0.58))
    a = sc.s * rng.uniform(0.24, 0.3)
    b = a * rng.uniform(0.8, 0.95)
    ang = rng.uniform(-0.3, 0.3)
    sc.draw(sc.ellipse(cx, cy, a, b, ang), 0.85, 1)
    sc.paint(sc.ring(cx, cy, a, b, sc.s * 0.02, ang), 1.3)
    kids = n - 2
    levels = [0.05, 1.6, 0.1, 1.4, 0.1]  # stomach (round), spine (bright), vein (dark tube), ...
    aspects = [(0.8, 1.0), (0.6, 0.9), (0.45, 0.55), (0.6, 0.9), (0.45, 0.55)]
    start = rng.uniform(0, 2 * np.pi)
    c, s = math.cos(ang), math.sin(ang)
    for k in range(kids):
        phi = start + 2 * np.pi * k / max(kids, 1)
        ex, ey = 0.48 * a * math.cos(phi), 0.48 * b * math.sin(phi)
        kx, ky = cx + ex * c - ey * s, cy + ex * s + ey * c
        r = min(a, b) * rng.uniform(0.18, 0.26) * (1.0 if kids > 1 else 1.6)
        lo, hi = aspects[k % len(aspects)]
        sc.draw(sc.ellipse(kx, ky, r, r * rng.uniform(lo, hi), rng.uniform(0, 3)), levels[k % len(levels)], 2 + k)


def _seg_cardiac(sc: _Scene, n: int, p: dict) -> None:
    """Myocardium (2) around the LV cavity (1), the atrium (3) adjacent below; extra classes nest."""
    if n < 4:
        return _seg_nested(sc, n, p)
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng, -0.2, 0.2), rng.uniform(0.32, 0.4))
    a = sc.s * rng.uniform(0.1, 0.13)  # half-width
    b = a * rng.uniform(1.5, 1.8)  # half-height (vertical long axis)
    sc.draw(sc.ellipse(cx, cy, a, b), 0.95, 2)
    sc.draw(sc.ellipse(cx, cy - 0.1 * b, a * 0.62, b * 0.7), _DARK, 1)
    la = a * rng.uniform(0.75, 0.95)
    sc.draw(sc.ellipse(cx, cy + b + la * 0.8, la, la * 0.85), 0.05, 3)
    for cls in range(4, n):  # unusual class counts: more chambers to the side
        sc.draw(sc.ellipse(cx + (cls - 3) * 2.2 * a, cy, a * 0.7, b * 0.6), _DARK if cls % 2 else _BRIGHT, cls)


def _seg_head(sc: _Scene, n: int, p: dict) -> None:
    """Fetal head: dark brain with a bright skull; the mask is the whole head."""
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng, -0.25, 0.25), rng.uniform(0.45, 0.58))
    a = sc.s * rng.uniform(0.22, 0.3)
    b = a * rng.uniform(0.72, 0.85)
    ang = rng.uniform(-0.6, 0.6)
    sc.draw(sc.ellipse(cx, cy, a, b, ang), 0.1, 1)
    sc.paint(sc.ring(cx, cy, a, b, max(2.5, sc.s * 0.025), ang), 1.5)
    c, s = math.cos(ang), math.sin(ang)
    sc.paint(sc.capsule((cx - 0.5 * a * c, cy - 0.5 * a * s), (cx + 0.5 * a * c, cy + 0.5 * a * s), 2.0), 0.8)  # midline
    if n > 2:
        _nest(sc, cx, cy, a * 0.6, b * 0.6, 2, n, 0.1)


def _seg_vessel(sc: _Scene, n: int, p: dict) -> None:
    """Carotid: an elongated dark lumen with bright walls; the mask is the lumen."""
    rng = sc.rng
    cx, cy = sc.to_px(_u(rng, -0.15, 0.15), rng.uniform(0.4, 0.6))
    a = (sc.x1 - sc.x0) * rng.uniform(0.3, 0.42) if sc.probe == "linear" else sc.s * 0.3
    b = sc.s * rng.uniform(0.06, 0.1)
    ang = rng.uniform(-0.15, 0.15)
    sc.paint(sc.ring(cx, cy, a + 3, b + 3, 3.5, ang), 1.3)
    sc.draw(sc.ellipse(cx, cy, a, b, ang), 0.04, 1)
    if n > 2:
        _nest(sc, cx, cy, a * 0.5, b * 0.8, 2, n, 0.04)


def _seg_ps_head(sc: _Scene, n: int, p: dict) -> None:
    """Pubic symphysis (1) lying against the fetal head (2); extra classes nest in the head."""
    rng = sc.rng
    side = 1 if rng.random() < 0.5 else -1
    hx, hy = sc.to_px(-side * rng.uniform(0.0, 0.15), rng.uniform(0.56, 0.62))
    ha = sc.s * rng.uniform(0.2, 0.24)
    hb = ha * rng.uniform(0.85, 0.95)
    phi = -math.pi / 2 + side * rng.uniform(0.5, 0.8)  # up and to one side of the head
    sa, sb = sc.s * rng.uniform(0.08, 0.1), sc.s * rng.uniform(0.03, 0.04)
    dist = math.hypot(ha * math.cos(phi), hb * math.sin(phi)) + sb + 1.0  # just touching the skull
    sx, sy = hx + dist * math.cos(phi), hy + dist * math.sin(phi)
    sc.draw(sc.ellipse(hx, hy, ha, hb), 0.12, 2)
    sc.paint(sc.ring(hx, hy, ha, hb, max(2.5, sc.s * 0.025)), 1.4)
    sc.draw(sc.ellipse(sx, sy, sa, sb, phi + math.pi / 2), 1.25, 1)
    if n > 3:
        _nest(sc, hx, hy, ha * 0.6, hb * 0.6, 3, n, 0.12)


_SEG_LOOKS: dict[str, Callable[[_Scene, int, dict], None]] = {
    "lesion": _seg_lesion,
    "nested": _seg_nested,
    "children": _seg_children,
    "cardiac": _seg_cardiac,
    "head": _seg_head,
    "vessel": _seg_vessel,
    "ps_head": _seg_ps_head,
}


def _seg_default(n: int) -> str:
    return "lesion" if n == 2 else "nested"


# classification: draw class ``k`` of ``n`` ----------------------------------------------
def _cls_breast(sc: _Scene, k: int, n: int, p: dict) -> None:
    """Normal (no lesion) / benign (smooth wide oval, enhancement) / malignant (irregular, tall, shadow)."""
    rng = sc.rng
    sc.layers(3)
    names = ["benign", "malignant"] if n == 2 else ["normal", "benign", "malignant"]
    kind = names[k] if k < len(names) else "malignant"
    cx, cy = sc.to_px(_u(rng, -0.4, 0.4), rng.uniform(0.4, 0.55))
    if kind == "normal":
        for _ in range(2):
            y = sc.to_px(0, rng.uniform(0.3, 0.8))[1]
            sc.paint(sc.capsule((0, y), (sc.w, y + rng.uniform(-8, 8)), sc.s * 0.04), 0.85, 0.8)
        return
    if kind == "benign":
        a = sc.s * rng.uniform(0.12, 0.17)
        b = a * rng.uniform(0.5, 0.65)
        reg = sc.ellipse(cx, cy, a, b, rng.uniform(-0.2, 0.2), 0.02)
        sc.scale(sc.capsule((cx, cy), (cx, sc.h), 1.6 * a), 1.4)
    else:
        b = sc.s * rng.uniform(0.12, 0.16)
        a = b * rng.uniform(0.55, 0.75)
        reg = sc.ellipse(cx, cy, a, b, rng.uniform(-0.2, 0.2), 0.35)
        sc.scale(sc.capsule((cx, cy), (cx, sc.h), 1.6 * a), 0.35)
    sc.paint(reg, 0.1)
    for extra in range(k + 1 - len(names)):  # more classes than names: extra bright foci
        fx, fy = sc.to_px(_u(rng, -0.7, 0.7), rng.uniform(0.7, 0.9))
        sc.paint(sc.ellipse(fx, fy, 3 + extra, 3 + extra), 1.6)


def _cls_lung(sc: _Scene, k: int, n: int, p: dict) -> None:
    """A-lines (0) / B-lines (1) / consolidation (2) below a bright pleural line; more: effusion."""
    rng = sc.rng
    vp = rng.uniform(0.15, 0.22)
    yp = sc.to_px(0.0, vp)[1]
    sc.paint(sc.capsule((0, yp), (sc.w, yp), max(3.0, sc.s * 0.02)), 1.5)
    below = sc.capsule((0, yp + sc.h), (sc.w, yp + sc.h), 2 * sc.h)  # darker lung below pleura
    sc.paint(below, 0.3)
    if k == 0:
        for m in (2, 3):
            y = sc.to_px(0, vp * m)[1]
            sc.paint(sc.capsule((0, y), (sc.w, y), max(2.5, sc.s * 0.015)), 1.1, 0.9)
    elif k == 1:
        for _ in range(int(rng.integers(2, 5))):
            u = _u(rng, -0.75, 0.75)
            sc.paint(sc.capsule(sc.to_px(u, vp), sc.to_px(u, 1.0), max(3.0, sc.s * 0.03)), 1.2)
    elif k == 2:
        cx, cy = sc.to_px(_u(rng, -0.3, 0.3), vp + 0.3)
        a = sc.s * rng.uniform(0.18, 0.26)
        sc.paint(sc.ellipse(cx, cy, a, a * 0.7, 0, 0.3), 0.6)
        for _ in range(8):
            sc.paint(sc.ellipse(cx + rng.uniform(-0.6, 0.6) * a, cy + rng.uniform(-0.4, 0.4) * a, 2.5, 2.0), 1.8)
    else:  # effusion: a dark band, deeper for higher classes
        y = sc.to_px(0, min(0.9, 0.35 + 0.1 * (k - 3)))[1]
        sc.paint(sc.capsule((0, y), (sc.w, y), sc.s * 0.12), 0.03)


def _cls_liver(sc: _Scene, k: int, n: int, p: dict) -> None:
    """Bright homogeneous lesion (0) / target lesion: dark halo around a grey core (1)."""
    if k > 1:
        return _cls_combo(sc, k, n, p)
    rng = sc.rng
    sc.tissue += 0.08
    cx, cy = sc.to_px(_u(rng, -0.4, 0.4), rng.uniform(0.35, 0.65))
    a = sc.s * rng.uniform(0.09, 0.14)
    b = a * rng.uniform(0.8, 1.0)
    if k == 0:
        sc.paint(sc.ellipse(cx, cy, a, b, 0, 0.05), 1.3)
    else:
        sc.paint(sc.ellipse(cx, cy, a, b, 0, 0.05), 0.06)
        sc.paint(sc.ellipse(cx, cy, a * 0.55, b * 0.55), 0.65)


def _cls_position(sc: _Scene, k: int, n: int, p: dict) -> None:
    """Class = grid cell (4 columns left→right × rows top→bottom): a horizontal flip changes it."""
    rng = sc.rng
    cols = 4
    rows = max(1, math.ceil(n / cols))
    col, row = k % cols, k // cols
    u = -0.72 + col * (1.44 / (cols - 1)) + rng.uniform(-0.05, 0.05)
    v = (0.38 + row * (0.38 / max(rows - 1, 1))) if rows > 1 else 0.55
    v += rng.uniform(-0.03, 0.03)
    cx, cy = sc.to_px(u, v)
    r = sc.s * rng.uniform(0.065, 0.08)
    if p.get("marker") == "spine":  # a column of bright vertebral dots
        for j in range(-2, 3):
            sc.paint(sc.ellipse(cx + rng.uniform(-1, 1), cy + j * r * 0.5, r * 0.28, r * 0.2), 1.7)
    else:  # a small head: dark inside a bright ring
        sc.paint(sc.ellipse(cx, cy, r, r * 0.85), 0.1)
        sc.paint(sc.ring(cx, cy, r, r * 0.85, 2.5), 1.6)


def _cls_combo(sc: _Scene, k: int, n: int, p: dict) -> None:
    """Class k: ``k // 2 + 1`` structures, dark (k even) or bright (k odd)."""
    rng = sc.rng
    count = k // 2 + 1
    level = _BRIGHT + 0.3 if k % 2 else 0.05
    slots = [(-0.45, 0.35), (0.45, 0.35), (0.0, 0.6), (-0.45, 0.8), (0.45, 0.8), (0.0, 0.25)]
    order = rng.permutation(len(slots))
    r = sc.s * rng.uniform(0.06, 0.08)
    for j in range(count):
        u, v = slots[int(order[j % len(slots)])]
        cx, cy = sc.to_px(u + rng.uniform(-0.08, 0.08), v + rng.uniform(-0.04, 0.04))
        sc.paint(sc.ellipse(cx, cy, r, r * rng.uniform(0.7, 1.0), rng.uniform(0, 3), 0.05), level)


_CLS_LOOKS: dict[str, Callable[[_Scene, int, int, dict], None]] = {
    "breast": _cls_breast,
    "lung": _cls_lung,
    "liver": _cls_liver,
    "position": _cls_position,
    "combo": _cls_combo,
}


# detection: draw one lesion and label it 1 ----------------------------------------------
def _det_dark(sc: _Scene, p: dict) -> None:
    rng = sc.rng
    if sc.probe == "linear":
        sc.layers(2)
    cx, cy = sc.to_px(_u(rng, -0.5, 0.5), rng.uniform(0.3, 0.7))
    a = sc.s * rng.uniform(0.06, 0.16)
    b = a * rng.uniform(0.6, 1.0)
    sc.draw(sc.ellipse(cx, cy, a, b, rng.uniform(0, 3), 0.12), p.get("level", 0.1), 1)


def _det_cord(sc: _Scene, p: dict) -> None:
    """A dark spinal cord band with a bright injury inside it."""
    rng = sc.rng
    y = sc.to_px(0, rng.uniform(0.4, 0.6))[1]
    tilt = rng.uniform(-10, 10)
    half = sc.s * rng.uniform(0.08, 0.11)
    sc.paint(sc.capsule((0, y - tilt), (sc.w, y + tilt), 2 * half), 0.12)
    sc.paint(sc.capsule((0, y - tilt - half), (sc.w, y + tilt - half), 3.0), 1.3)
    sc.paint(sc.capsule((0, y - tilt + half), (sc.w, y + tilt + half), 3.0), 1.3)
    u = _u(rng, -0.5, 0.5)
    cx = sc.to_px(u, 0.5)[0]
    cy = y + tilt * (2 * cx / sc.w - 1)
    a = sc.s * rng.uniform(0.06, 0.12)
    sc.draw(sc.ellipse(cx, cy, a, half * rng.uniform(0.5, 0.8), 0, 0.15), 1.4, 1)


_DET_LOOKS: dict[str, Callable[[_Scene, dict], None]] = {"dark": _det_dark, "cord": _det_cord}


# regression: draw bright structures and return the K landmark points ----------------------
def _blob(sc: _Scene, x: float, y: float) -> None:
    r = max(2.5, sc.s * 0.018)
    sc.paint(sc.ellipse(x, y, r, r, edge=1.0), 1.9)


def _reg_polyline(sc: _Scene, n: int, p: dict) -> list[tuple[float, float]]:
    rng = sc.rng
    pts = []
    u, v = _u(rng, -0.55, -0.35), rng.uniform(0.3, 0.7)
    for _ in range(n):
        pts.append(sc.to_px(u, v))
        u = min(0.7, u + rng.uniform(0.5, 1.1) / max(1, n - 1))
        v = float(np.clip(v + rng.uniform(-0.25, 0.25), 0.25, 0.8))
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        sc.paint(sc.capsule(a, b, max(3.0, sc.s * 0.025)), 1.3)
    for x, y in pts:
        _blob(sc, x, y)
    return pts


def _ends(sc: _Scene) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two ends of an elongated structure, both well inside the field of view."""
    rng = sc.rng
    v = rng.uniform(0.35, 0.7)
    tilt = rng.uniform(-0.15, 0.15)
    span = rng.uniform(0.35, 0.55)
    u0 = rng.uniform(-0.6, 0.6 - 2 * span)
    return sc.to_px(u0, v - tilt), sc.to_px(u0 + 2 * span, v + tilt)


def _reg_rod(sc: _Scene, n: int, p: dict) -> list[tuple[float, float]]:
    """Femur: a bright rod; the landmarks are its ends (more points: along it)."""
    p0, p1 = _ends(sc)
    half = math.dist(p0, p1) / 2
    cx = (p0[0] + p1[0]) / 2
    sc.paint(sc.capsule(p0, p1, max(4.0, sc.s * 0.03)), 1.35)
    sc.scale(sc.capsule((cx, max(p0[1], p1[1]) + 6), (cx, sc.h), 1.2 * half), 0.8)  # shadow
    pts = [(p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t) for t in np.linspace(0, 1, n)]
    for x, y in pts:
        _blob(sc, x, y)
    return pts


def _reg_canal(sc: _Scene, n: int, p: dict) -> list[tuple[float, float]]:
    """Cervical canal: a dark channel inside grey cervix tissue, bright landmarks at its ends."""
    p0, p1 = _ends(sc)
    half = math.dist(p0, p1) / 2
    ang = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    sc.paint(sc.ellipse((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, half * 1.3, half * 0.5, ang), 0.8)
    sc.paint(sc.capsule(p0, p1, max(3.0, sc.s * 0.02)), 0.05)
    pts = [(p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t) for t in np.linspace(0, 1, n)]
    for x, y in pts:
        _blob(sc, x, y)
    return pts


def _reg_ps_head(sc: _Scene, n: int, p: dict) -> list[tuple[float, float]]:
    """Intrapartum: symphysis ends (points 1, 2) and the point of the skull nearest to it (3)."""
    if n != 3:
        return _reg_polyline(sc, n, p)
    rng = sc.rng
    p0 = sc.to_px(_u(rng, -0.65, -0.45), rng.uniform(0.22, 0.3))
    length = sc.s * rng.uniform(0.18, 0.25)
    ang = rng.uniform(0.2, 0.6)
    p1 = (p0[0] + length * math.cos(ang), p0[1] + length * math.sin(ang))
    sc.paint(sc.capsule(p0, p1, max(4.0, sc.s * 0.035)), 1.3)
    hx, hy = sc.to_px(_u(rng, 0.05, 0.25), rng.uniform(0.58, 0.66))
    ha = sc.s * rng.uniform(0.2, 0.24)
    hb = ha * rng.uniform(0.8, 0.92)
    thick = max(3.0, sc.s * 0.025)
    sc.paint(sc.ellipse(hx, hy, ha, hb), 0.15)
    sc.paint(sc.ring(hx, hy, ha, hb, thick), 1.5)
    # the rim point facing the symphysis end
    phi = math.atan2((p1[1] - hy) / hb, (p1[0] - hx) / ha)
    rr = 1.0 - 0.5 * thick / min(ha, hb)
    p2 = (hx + rr * ha * math.cos(phi), hy + rr * hb * math.sin(phi))
    for x, y in (p0, p1, p2):
        _blob(sc, x, y)
    return [p0, p1, p2]


_REG_LOOKS: dict[str, Callable[[_Scene, int, dict], list[tuple[float, float]]]] = {
    "polyline": _reg_polyline,
    "rod": _reg_rod,
    "canal": _reg_canal,
    "ps_head": _reg_ps_head,
}


# --------------------------------------------------------------------------------------------
# One sample per kind: returns (image array, mask array or None, label columns)
# --------------------------------------------------------------------------------------------
@dataclass
class _Made:
    image: np.ndarray
    mask: np.ndarray | None
    label: dict[str, str]


def _make_seg(sc: _Scene, spec: TaskSpec, style: _Style, index: int, offset: int) -> _Made:
    look = _SEG_LOOKS.get(style.look) or _SEG_LOOKS[_seg_default(spec.num_classes)]
    look(sc, spec.num_classes, style.params)
    img = sc.render()
    return _Made(img, sc.mask, {})


def _make_cls(sc: _Scene, spec: TaskSpec, style: _Style, index: int, offset: int) -> _Made:
    k = (index + offset) % spec.num_classes  # balanced classes, stable per image
    look = _CLS_LOOKS.get(style.look) or _cls_combo
    look(sc, k, spec.num_classes, style.params)
    return _Made(sc.render(), None, {"mask": str(k)})


def _make_det(sc: _Scene, spec: TaskSpec, style: _Style, index: int, offset: int) -> _Made:
    look = _DET_LOOKS.get(style.look) or _det_dark
    look(sc, style.params)
    img = sc.render()
    ys, xs = np.nonzero(sc.mask)
    if xs.size == 0:  # cannot happen with the placements above; keep the schema valid anyway
        xs, ys = np.array([sc.w // 2]), np.array([sc.h // 2])
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return _Made(img, None, dict(zip(BOX_COLUMNS, map(str, box), strict=True)))


def _make_reg(sc: _Scene, spec: TaskSpec, style: _Style, index: int, offset: int) -> _Made:
    look = _REG_LOOKS.get(style.look) or _reg_polyline
    pts = look(sc, spec.num_classes, style.params)
    img = sc.render()
    label = {}
    for j, (x, y) in enumerate(pts, start=1):
        x = min(max(x, 0.0), sc.w - 0.5)
        y = min(max(y, 0.0), sc.h - 0.5)
        label[f"point_{j}_xy"] = json.dumps([round(x, 1), round(y, 1)])
    return _Made(img, None, label)


_MAKERS: dict[TaskKind, Callable[[_Scene, TaskSpec, _Style, int, int], _Made]] = {
    TaskKind.SEGMENTATION: _make_seg,
    TaskKind.CLASSIFICATION: _make_cls,
    TaskKind.DETECTION: _make_det,
    TaskKind.REGRESSION: _make_reg,
}


def _label_columns(spec: TaskSpec) -> list[str]:
    return {
        TaskKind.SEGMENTATION: ["mask_path"],
        TaskKind.CLASSIFICATION: ["mask"],
        TaskKind.DETECTION: list(BOX_COLUMNS),
        TaskKind.REGRESSION: [f"point_{j}_xy" for j in range(1, spec.num_classes + 1)],
    }[spec.kind]


# --------------------------------------------------------------------------------------------
# Encoding and writing
# --------------------------------------------------------------------------------------------
def _encode_image(img: np.ndarray, ext: str, rgb: bool) -> bytes:
    pil = Image.fromarray(img, mode="L")
    if rgb or ext == ".jpg":
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    if ext == ".jpg":
        pil.save(buf, format="JPEG", quality=92)
    elif ext == ".bmp":
        pil.save(buf, format="BMP")
    else:
        pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _task_key(task_id: str) -> int:
    return zlib.crc32(task_id.encode("utf-8"))


def _image_rng(seed: int, task_id: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _task_key(task_id), index])


DEFAULT_SIZES = (128, 320)  # image sides in pixels: heights up to 0.8 of the largest, widths up to it


def _image_size(rng: np.random.Generator, style: _Style, sizes: tuple[int, int] = DEFAULT_SIZES) -> tuple[int, int]:
    lo, hi = sizes
    h = int(rng.integers(lo, int(hi * 0.8) + 1))
    w = int(np.clip(h * rng.uniform(0.9, 1.45), lo, hi))
    return h, w


@dataclass
class _Row:
    base: dict[str, str]  # image_path, task_id, task_name, num_classes (+ mask_path for segmentation)
    label: dict[str, str]
    files: dict[str, bytes]  # root-relative path -> bytes (image)
    mask_files: dict[str, bytes]  # root-relative path -> bytes (label masks)


def _make_row(seed: int, spec: TaskSpec, index: int, width: int, offset: int,
              sizes: tuple[int, int] = DEFAULT_SIZES) -> _Row:
    style = _style(spec)
    rng = _image_rng(seed, spec.task_id, index)
    h, w = _image_size(rng, style, sizes)
    ext = style.ext if isinstance(style.ext, str) else style.ext[int(rng.integers(len(style.ext)))]
    sc = _Scene(rng, h, w, style.probe)
    made = _MAKERS[spec.kind](sc, spec, style, index, offset)
    folder = dataset_folder(spec)
    stem = style.stem.format(i=index + 1, w=width)
    img_rel = f"{folder}/img/{stem}{ext}"
    base = {
        "image_path": f"../{img_rel}",
        "task_id": spec.task_id,
        "task_name": spec.kind.csv_name,
        "num_classes": str(spec.num_classes),
    }
    files = {img_rel: _encode_image(made.image, ext, style.rgb)}
    masks: dict[str, bytes] = {}
    label = dict(made.label)
    if made.mask is not None:
        mask_rel = f"{folder}/mask/{style.mask_stem.format(i=index + 1, w=width)}.png"
        base["mask_path"] = f"../{mask_rel}"
        masks[mask_rel] = encode_mask_png(made.mask)
    return _Row(base, label, files, masks)


def _write_root(root: Path, per_task: dict[TaskSpec, list[_Row]], labelled: bool) -> None:
    (root / CSV_DIR).mkdir(parents=True, exist_ok=True)
    for spec, rows in per_task.items():
        columns = ["image_path", "task_id", "task_name", "num_classes"]
        if labelled:
            columns += _label_columns(spec)
        elif spec.kind is TaskKind.SEGMENTATION:
            columns.append("mask_path")
        with open(root / CSV_DIR / f"{spec.task_id}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row.base, **row.label})
        for row in rows:
            items = list(row.files.items()) + (list(row.mask_files.items()) if labelled else [])
            for rel, data in items:
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)


def _resolve_tasks(tasks: Iterable[str] | str | None) -> list[TaskSpec]:
    registry = list_tasks()
    if tasks is None:
        return registry
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names = [t.task_id if isinstance(t, TaskSpec) else str(t) for t in tasks]
    wanted = [t.strip() for t in names if t.strip()]
    known = {s.task_id: s for s in registry}
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise FmuiaError(f"unknown task(s) {', '.join(map(repr, unknown))}; valid task ids: {', '.join(known)}")
    if not wanted:
        raise FmuiaError(f"no tasks selected; valid task ids: {', '.join(known)}")
    chosen = set(wanted)
    return [s for s in registry if s.task_id in chosen]


def _test_indices(seed: int, spec: TaskSpec, n: int) -> set[int]:
    n_test = min(n - 1, max(1, round(n / 3)))
    rng = np.random.default_rng([seed, _task_key(spec.task_id), 0x5EED])
    return {int(i) for i in rng.permutation(n)[:n_test]}


_OWN_ENTRIES = {CSV_DIR, *KIND_DIRS.values(), *SPLIT_DIRS}


def _prepare_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FmuiaError(f"{out}: exists and is not a folder; choose another output path")
    if not out.is_dir():
        return
    entries = {p.name for p in out.iterdir()}
    if entries and not overwrite:
        raise FmuiaError(f"{out}: folder exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    foreign = sorted(entries - _OWN_ENTRIES)
    if foreign:  # never delete a folder we did not write
        raise FmuiaError(
            f"{out}: not a synthetic data folder (it holds {', '.join(map(repr, foreign[:5]))}); "
            "refusing to replace it, choose another output path"
        )


def synthesize(
    out_dir: str | os.PathLike,
    per_task: int = 20,
    seed: int = 0,
    tasks: Iterable[str] | str | None = None,
    split: bool = False,
    *,
    overwrite: bool = False,
    progress: bool = False,
    sizes: tuple[int, int] = DEFAULT_SIZES,
) -> Path:
    """Write a synthetic data root (or a train/test/labels split) to ``out_dir``; return its path.

    ``per_task`` images per task, ``seed`` makes it reproducible (byte-identical files),
    ``tasks`` restricts to some registered task ids (a list, ``TaskSpec`` objects or a
    comma-separated string; the images are the same as in the full set). With
    ``split=True`` about a third of each task's rows (at least one) go to ``test/`` and
    ``labels/``, the rest to ``train/``. The output is built in a temporary sibling folder and
    moved into place; a non-empty ``out_dir`` is refused unless ``overwrite``, and even then
    only a folder that holds nothing but a previous synthetic output is replaced. ``sizes``:
    the smallest and largest image side in pixels (default 128..320; the real data reaches
    about 180..700, e.g. for benchmarks).
    """
    out = Path(out_dir)
    if isinstance(per_task, bool) or not isinstance(per_task, (int, np.integer)) or per_task < 1:
        raise FmuiaError(f"per_task must be a positive integer, got {per_task!r}")
    if split and per_task < 2:
        raise FmuiaError(f"split needs per_task >= 2 (one row for test, one for train), got {per_task}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FmuiaError(f"seed must be a non-negative integer, got {seed!r}")
    lo, hi = (int(v) for v in sizes)
    if not 32 <= lo <= 0.8 * hi or hi > 8192:
        raise FmuiaError(f"sizes {sizes!r}: expected (smallest, largest) side with 32 <= smallest <= 0.8 * largest <= 6553")
    specs = _resolve_tasks(tasks)
    _prepare_target(out, overwrite)

    width = max(3, len(str(per_task)))
    rows: dict[TaskSpec, list[_Row]] = {}
    iterator: Iterable[TaskSpec] = specs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(specs, desc="synth", unit="task")
    for spec in iterator:
        offset = int(np.random.default_rng([seed, _task_key(spec.task_id), 0xC1A55]).integers(spec.num_classes))
        rows[spec] = [_make_row(int(seed), spec, i, width, offset, sizes) for i in range(per_task)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if split:
            train: dict[TaskSpec, list[_Row]] = {}
            test: dict[TaskSpec, list[_Row]] = {}
            for spec, task_rows in rows.items():
                chosen = _test_indices(int(seed), spec, len(task_rows))
                train[spec] = [r for i, r in enumerate(task_rows) if i not in chosen]
                test[spec] = [r for i, r in enumerate(task_rows) if i in chosen]
            _write_root(tmp / "train", train, labelled=True)
            _write_root(tmp / "test", test, labelled=False)
            _write_root(tmp / "labels", test, labelled=True)
        else:
            _write_root(tmp, rows, labelled=True)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    os.chmod(out, 0o755 & ~_umask())
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
