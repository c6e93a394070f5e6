"""``fmuia pack``: check a prediction folder and zip it the way Codabench expects.

The archive holds exactly the official files, at its root: the prediction JSON files that are
present and one mask per segmentation row (``Segmentation/...``), nothing else (no folder
entries, no ``__MACOSX``, no dotfiles, no stray files). Members are sorted and carry a fixed
timestamp, so the same folder always gives the same bytes. The zip is written to a temporary
file and renamed into place.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fmuia._atomic import atomic_path
from fmuia.check import CheckReport, CheckUsageError, check_predictions, load_data_root
from fmuia.dataset.schema import DataRoot, prediction_mask_relpath
from fmuia.errors import FmuiaError
from fmuia.predfolder import MAX_JSON_BYTES, MAX_MASK_BYTES, open_predictions
from fmuia.tasks import PREDICTION_FILES, TaskKind

__all__ = ["PackRefusedError", "pack_predictions", "pack_members"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest timestamp: reproducible archives


class PackRefusedError(FmuiaError):
    """The folder failed the checks and ``force`` was not given; ``report`` says why."""

    exit_code = 1

    def __init__(self, message: str, report: CheckReport):
        super().__init__(message, report.errors)
        self.report = report


def pack_members(pred_dir: str | os.PathLike, root: DataRoot) -> list[str]:
    """The files of ``pred_dir`` that go into the archive, in archive order.

    The JSON files present (in :data:`~fmuia.tasks.PREDICTION_FILES` order), then the masks
    the CSVs ask for that exist, sorted.
    """
    with open_predictions(pred_dir) as folder:
        files = set(folder.files())
        jsons = [name for name in PREDICTION_FILES.values() if name in files]
        masks = {prediction_mask_relpath(s.mask_path or "") for s in root.of_kind(TaskKind.SEGMENTATION)}
        return jsons + sorted(masks & files)


def pack_predictions(
    pred_dir: str | os.PathLike,
    data_root: DataRoot | str | os.PathLike,
    out_zip: str | os.PathLike,
    force: bool = False,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Check ``pred_dir`` against ``data_root`` and write ``out_zip``; returns the check report.

    Raises :class:`PackRefusedError` (nothing written) when the check finds errors and ``force``
    is false; :class:`~fmuia.check.CheckUsageError` when the check cannot run.

    >>> pack_predictions("preds/", "data/test", "predictions.zip")   # doctest: +SKIP
    """
    root = load_data_root(data_root)
    out = Path(out_zip)
    if out.exists() and out.is_dir():
        raise CheckUsageError(f"{out}: is a folder; expected the path of the .zip to write")
    report = check_predictions(pred_dir, root, workers=workers, progress=progress)
    if not report.ok and not force:
        raise PackRefusedError(
            f"{pred_dir}: {len(report.errors)} error(s); not packed (fix them, or use --force to pack anyway)", report
        )
    members = pack_members(pred_dir, root)
    json_names = set(PREDICTION_FILES.values())
    with open_predictions(pred_dir) as folder, atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name in members:
                is_json = name in json_names
                try:
                    data = folder.read_bytes(name, MAX_JSON_BYTES if is_json else MAX_MASK_BYTES)
                except FmuiaError:
                    raise
                except Exception as exc:  # a corrupt archive member, an unreadable file
                    raise FmuiaError(f"{pred_dir}/{name}: cannot read ({type(exc).__name__}: {exc}); nothing packed") from exc
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED if is_json else zipfile.ZIP_STORED  # PNG is compressed already
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, so the mode bits above are honoured
                zf.writestr(info, data)
    return report
