"""Progress of long commands (train, validate, predict): bars on a terminal, plain lines without one.

Under nohup, slurm or ``docker logs`` stderr is not a terminal and tqdm bars switch themselves
off, so a run would print nothing until it ends. :class:`Progress` shows a tqdm bar on a terminal
and otherwise writes one flushed line every ``every`` units (steps, images) and at least one every
``interval`` seconds. The mode comes from the caller (``bars``, ``lines``, ``none``, or ``auto``),
then from the ``FMUIA_PROGRESS`` environment variable, then from ``isatty()``. No torch here.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from tqdm import tqdm

from fmuia.errors import FmuiaError

__all__ = [
    "MODES", "ENV", "DEFAULT_INTERVAL_S", "resolve_mode", "Progress", "format_duration", "format_train_line",
    "format_val_line", "KIND_ABBREV",
]

MODES = ("auto", "bars", "lines", "none")
ENV = "FMUIA_PROGRESS"
DEFAULT_INTERVAL_S = 30.0
KIND_ABBREV = {"segmentation": "seg", "classification": "cls", "detection": "det", "regression": "reg"}


def resolve_mode(progress: bool | str | None = None, stream: TextIO | None = None) -> str:
    """``"bars"``, ``"lines"`` or ``"none"``.

    ``False`` or ``"none"``: nothing. ``"bars"``/``"lines"``: that. ``True``, ``None`` or ``"auto"``:
    ``$FMUIA_PROGRESS`` when set, else bars when ``stream`` (default stderr) is a terminal, else lines.
    """
    if progress is False:
        return "none"
    mode = "auto" if progress is None or progress is True else str(progress).lower()
    if mode not in MODES:
        raise FmuiaError(f"--progress {progress!r}: expected one of {', '.join(MODES)}")
    if mode == "auto":
        env = os.environ.get(ENV, "").strip().lower()
        if env and env not in MODES:
            raise FmuiaError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(MODES)}")
        mode = env if env and env != "auto" else "auto"
    if mode == "auto":
        s = stream if stream is not None else sys.stderr
        isatty = getattr(s, "isatty", None)
        mode = "bars" if isatty is not None and isatty() else "lines"
    return mode


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (hours may exceed 24); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _g(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def format_train_line(epoch: int, epochs: int, step: int, steps: int, losses: Mapping[str, float],
                      images_per_s: float | None, lrs: Mapping[str, float], eta_s: float | None) -> str:
    """``epoch 3/20 step 1200/8000 loss seg=0.412 cls=1.03 img/s=41.2 lr enc=8.1e-05 heads=8.1e-04 eta 1:02:11``.

    ``epoch`` is 1-based; ``losses`` maps a kind (or its abbreviation) to its running mean; kinds
    without a step yet are left out.
    """
    parts = [f"epoch {epoch}/{epochs}", f"step {step}/{steps}"]
    if losses:
        parts.append("loss " + " ".join(f"{KIND_ABBREV.get(k, k)}={_g(v)}" for k, v in losses.items()))
    if images_per_s is not None:
        parts.append(f"img/s={images_per_s:.1f}")
    if lrs:
        parts.append("lr " + " ".join(f"{k}={v:.1e}" for k, v in lrs.items()))
    parts.append(f"eta {format_duration(eta_s)}")
    return " ".join(parts)


def format_val_line(epoch: int, epochs: int, metrics: Mapping[str, float | None], composite: float | None,
                    best: bool, seconds: float | None = None) -> str:
    """``epoch 3/20 val seg_DSC=0.71 cls_Accuracy=0.8 composite=0.63 (best) time 0:00:12``; ``None`` metrics
    are left out."""
    parts = [f"epoch {epoch}/{epochs} val"]
    parts += [f"{k}={_g(v)}" for k, v in metrics.items() if v is not None]
    parts.append(f"composite={'?' if composite is None else _g(composite)}" + (" (best)" if best else ""))
    if seconds is not None:
        parts.append(f"time {format_duration(seconds)}")
    return " ".join(parts)


class Progress:
    """One progress display over ``total`` units: a tqdm bar, plain lines, or nothing.

    In ``lines`` mode :meth:`update` writes a line when the count crosses a multiple of ``every`` or
    ``interval`` seconds have passed since the last line (either may be ``None``), except on the
    last unit, which :meth:`close` reports. The text is ``line()`` when given to :meth:`update`,
    else ``"{desc} {n}/{total} {noun} {rate} {unit}/s eta H:MM:SS"`` (``in H:MM:SS`` once done).
    """

    def __init__(self, total: int | None, desc: str, *, mode: str = "auto", every: int | None = None,
                 interval: float | None = DEFAULT_INTERVAL_S, stream: TextIO | None = None, unit: str = "it",
                 leave: bool = True, noun: str | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.total, self.desc, self.unit, self.leave = total, desc, unit, leave
        self.noun = noun or unit
        self.every = every if every and every > 0 else None
        self.interval = interval
        self.clock = clock
        self.n = 0
        self.start = self._last_time = clock()
        self.lines_written = 0
        self._closed = False
        self._bar = (tqdm(total=total, desc=desc, unit=unit, leave=leave, file=self.stream)
                     if self.mode == "bars" else None)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def rate(self) -> float | None:
        """Units per second so far (``None`` before the first)."""
        e = self.elapsed
        return self.n / e if self.n and e > 0 else None

    @property
    def eta_s(self) -> float | None:
        r = self.rate
        return (self.total - self.n) / r if r and self.total is not None else None

    def default_line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        rate = self.rate
        return (f"{self.desc} {self.n}{total} {self.noun}"
                + (f" {rate:.1f} {self.unit}/s" if rate is not None else "")
                + (f" eta {format_duration(self.eta_s)}" if self.total is not None and self.n < self.total
                   else f" in {format_duration(self.elapsed)}"))

    def update(self, n: int = 1, *, postfix: Mapping[str, object] | str | None = None,
               line: Callable[[], str] | None = None) -> bool:
        """Count ``n`` more units; returns whether a line was written."""
        before = self.n
        self.n += n
        if self._bar is not None:
            if postfix is not None:
                if isinstance(postfix, str):
                    self._bar.set_postfix_str(postfix, refresh=False)
                else:
                    self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return False
        if self.mode != "lines" or (self.total is not None and self.n >= self.total):
            return False
        now = self.clock()
        due = (self.every is not None and self.n // self.every > before // self.every) or (
            self.interval is not None and now - self._last_time >= self.interval)
        if due:
            self._emit(line() if line is not None else self.default_line())
        return due

    def _emit(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self._last_time = self.clock()
        self.lines_written += 1

    def write(self, text: str) -> None:
        """A message line: above the bar, as a plain line, or nowhere (``none``)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.mode == "bars":
            print(text, file=self.stream, flush=True)
        elif self.mode == "lines":
            self._emit(text)

    def close(self, final: str | None = None) -> None:
        """End the display; ``final`` (or, in lines mode with ``leave``, the default line) is written last."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            if final is not None:
                print(final, file=self.stream, flush=True)
        elif self.mode == "lines" and (final is not None or self.leave):
            self._emit(final if final is not None else self.default_line())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
