"""``python main.py predict``: label a folder of images with a trained run.

The model is rebuilt from the run folder alone: ``config.yaml`` (backbone, PEFT
modules, dataset name) and ``checkpoint_last.pt`` (trained parameters, seed, class
names). The normalisation is a function of DATA.NAME (``dataset_stats``), so the
training data is not needed; only a checkpoint that predates recorded class names
sends us to DATA.DATAPATH for them. Prediction is the main head's, as in evaluation
(docs/method.md §3: inference uses f, not f_aux), on the evaluation view of each image.

Every image file below the folder (any depth, :data:`~finessl.data.folder.IMAGE_EXTENSIONS`)
gets one row of ``path,class,confidence``, path relative to the folder, in path order.
Unreadable files are logged by path and left out; the CSV is written atomically.
"""
from __future__ import annotations

import csv
import io
import logging
import os

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from finessl.data.datasets import dataset_classnames
from finessl.data.folder import IMAGE_EXTENSIONS, UnreadableLog, list_images, open_rgb, readable
from finessl.data.transforms import test_transform
from finessl.engine.checkpoint import LAST, metric_checkpoint
from finessl.engine.trained import read_run, rebuild
from finessl.errors import UserError
from finessl.io import atomic_write_text

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """index -> (evaluation view or None, index, why it failed)."""

    def __init__(self, paths: list[str], crop: int):
        self.paths, self.crop = paths, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return test_transform(open_rgb(self.paths[i]), self.crop), i, ""
        except Exception as e:  # a file that decodes badly is skipped, never fatal
            return None, i, " ".join(f"{type(e).__name__}: {e}".split())


def _collate(items):
    """Stack the images that decoded; keep the indices of both kinds."""
    good = [(view, i) for view, i, _ in items if view is not None]
    images = torch.stack([view for view, _ in good]) if good else None
    return images, [i for _, i in good], [(i, why) for view, i, why in items if view is None]


def _classnames(cfg, state: dict, model_dir: str) -> list[str]:
    names = state.get("classnames")
    if names is not None and not (isinstance(names, (list, tuple, str)) and len(names) == 0):
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{os.path.join(model_dir, LAST)} is not a FineSSL checkpoint (its "
                            f"classnames are a {type(names).__name__}, not a list of names)")
        return list(names)
    log.info("%s records no class names; reading them from %s (DATA.DATAPATH)",
             model_dir, cfg.DATA.DATAPATH)
    try:
        return dataset_classnames(cfg.DATA.NAME, cfg.DATA.DATAPATH, cfg)
    except UserError as e:
        raise UserError(f"predict: the checkpoint in {model_dir} records no class names, and "
                        f"DATA.DATAPATH cannot give them ({e}); pass DATA.DATAPATH PATH") from None


def _check_output(output: str) -> None:
    """A one-line error, before any work, when ``output`` cannot be a file: it is a
    folder, or the nearest existing parent of it is a file (or not writable)."""
    if os.path.isdir(output):
        raise UserError(f"predict: --output {output} is a folder; give the CSV's file path, "
                        f"e.g. {os.path.join(output, 'predictions.csv')}")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        what = "a file, not a folder" if os.path.isfile(parent) else "not a folder"
        raise UserError(f"predict: --output {output} cannot be written: {parent} is {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"predict: --output {output} cannot be written: {parent} is not "
                        f"writable")


@torch.no_grad()
def predict(model_dir: str, images: str, output: str, cfg_file: str | None = None,
            opts: list[str] | None = None, metric: str = "last") -> dict:
    """Write ``output`` (CSV) for every readable image below ``images``; return counts.
    ``metric``: the epoch whose checkpoint labels them (``last``, ``best_val``:
    :func:`finessl.engine.checkpoint.metric_checkpoint`)."""
    name = metric_checkpoint(metric)
    if not os.path.isdir(images):
        raise UserError(f"predict: --images {images} is not a folder")
    _check_output(output)
    paths = list_images(images)
    if not paths:
        raise UserError(f"predict: no image files below {images} "
                        f"(extensions: {' '.join(IMAGE_EXTENSIONS)})")
    cfg, state, path = read_run(model_dir, "--model-dir", list(opts or []), cfg_file, name)
    classnames = _classnames(cfg, state, model_dir)
    run = rebuild(cfg, state, path, classnames)
    model, device, precision, size = run.model, run.device, run.precision, run.input_size
    report = UnreadableLog()
    paths = readable(paths, report)
    loader = DataLoader(ImageFiles(paths, size),
                        batch_size=max(100, cfg.DATA.BATCH_SIZE), shuffle=False,
                        num_workers=cfg.num_workers, collate_fn=_collate)
    rows = []
    for batch, indices, failed in loader:
        for i, why in failed:
            report.add(paths[i], why)
        if batch is None:
            continue
        with precision.autocast():
            logits = model.classify(batch.to(device, non_blocking=True))
        confidence, label = F.softmax(logits.float(), dim=-1).max(dim=-1)
        rows += [(os.path.relpath(paths[i], images), classnames[k], c)
                 for i, k, c in zip(indices, label.tolist(), confidence.tolist())]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "class", "confidence"])
    writer.writerows((path, name, f"{c:.6f}") for path, name, c in rows)
    try:
        atomic_write_text(text.getvalue(), output)
    except OSError as e:  # the folder changed while predicting
        raise UserError(f"predict: --output {output} cannot be written "
                        f"({e.strerror or type(e).__name__})") from None
    if report.paths:
        log.warning("predict: skipped %d unreadable image file(s) below %s",
                    len(report.paths), images)
    log.info("predict: %d image(s) labelled into %s", len(rows), output)
    return {"predicted": len(rows), "skipped": len(report.paths), "output": output}
