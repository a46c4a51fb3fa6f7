"""Open-set CIFAR-100 (``DATA.NAME CIFAR100_OpenSet``), the FineSSL paper's open-set study
(Fig. 4): unlabeled data that holds classes the model is not asked to learn.

Read from CIFAR-100's own files (``cifar-100-python/``, as ``CIFAR100``). The first
``OPENSET.SEEN_CLASSES`` classes by index (50: ``apple`` to ``mountain``) are the label
space, labels 0..49; the other 50 (``mouse`` to ``worm``) are unseen:

- **labeled**: per seen class, its first ``DATA.NUM_L`` training images (5 or 10 in the
  paper), as every CIFAR split is made (``DATA.IMB_L`` applies);
- **unlabeled**: per seen class its first ``NUM_L + NUM_U`` images, then per unseen
  class its first ``NUM_U`` (``DATA.UNLABELED all``: every training image of both). The
  unseen images carry the true label -2, out of the label space: diagnostics count them
  apart, nothing trains on it;
- **test**: the test images of the seen classes only; accuracy is over 50 classes
  (``DATA.NUMBER_CLASSES 50``).

Normalisation: CIFAR-100's statistics, as the closed-set runs.
"""

from __future__ import annotations

import logging

from finessl import config
from finessl.config import declare
from finessl.data.base import ArrayImages, Dataset, RawDataset, register
from finessl.data.cifar import Cifar100
from finessl.data.splits import make_split
from finessl.errors import UserError

log = logging.getLogger(__name__)

OUT_OF_CLASS = -2  # the true label of an unlabeled image outside the label space


def _seen(value) -> str | None:
    return None if 1 <= value < 100 else "must lie in 1..99 (CIFAR-100 has 100 classes)"


declare("OPENSET.SEEN_CLASSES", 50, "CIFAR100_OpenSet: the first K classes are the label "
        "space; the others appear only unlabeled (true label -2)", check=_seen)


@register("CIFAR100_OpenSet", "CIFAR100_open")
class Cifar100OpenSet(Dataset):
    title = "CIFAR-100 open-set"
    stats = Cifar100.stats

    def _data(self):
        return (self.cfg if self.cfg is not None else config.get_cfg_defaults()).DATA

    def load(self, root: str, download: bool) -> RawDataset:
        """CIFAR-100, relabelled and split; see the module docstring."""
        full = Cifar100(self.cfg).load(root, download)
        seen = self.setting("OPENSET.SEEN_CLASSES")
        total = len(full.classnames)
        if seen >= total:
            raise UserError(f"OPENSET.SEEN_CLASSES {seen}: {root} has only {total} CIFAR-100 "
                            f"classes, none would be left unseen")
        data = self._data()
        pool = "num_u" if data.UNLABELED == "dataset" else data.UNLABELED
        num_u = data.NUM_U if pool == "num_u" else None
        seen_pos = [i for i, t in enumerate(full.train_targets) if t < seen]
        labeled, unlabeled = make_split([full.train_targets[i] for i in seen_pos], seen,
                                        data.NUM_L, num_u, data.IMB_L, data.IMB_U)
        labeled = [seen_pos[j] for j in labeled]
        unlabeled = [seen_pos[j] for j in unlabeled]
        per_unseen = [[] for _ in range(total - seen)]
        for i, t in enumerate(full.train_targets):
            if t >= seen:
                per_unseen[t - seen].append(i)
        outside = [i for indices in per_unseen
                   for i in (indices if num_u is None else indices[:data.NUM_U])]
        unlabeled += outside
        targets = [t if t < seen else OUT_OF_CLASS for t in full.train_targets]
        test_idx = [i for i, t in enumerate(full.test_targets) if t < seen]
        log.info("CIFAR-100 open-set: %d seen classes, %d labeled; unlabeled %d seen-class + "
                 "%d unseen-class (true label -2); %d test images of seen classes",
                 seen, len(labeled), len(unlabeled) - len(outside), len(outside), len(test_idx))
        return self.raw(
            train_targets=targets,
            test_targets=[full.test_targets[i] for i in test_idx],
            classnames=full.classnames[:seen],
            train_images=full.train_images,
            test_images=ArrayImages(full.test_images.array[test_idx]),
            fixed_split=(labeled, unlabeled),
            split_meta={"seen_classes": seen, "NUM_L": data.NUM_L, "NUM_U": data.NUM_U,
                        "IMB_L": data.IMB_L, "IMB_U": data.IMB_U, "UNLABELED": pool,
                        "out_of_class": len(outside)},
        )

    def classnames(self, root: str) -> list[str]:
        names = Cifar100(self.cfg).load(root, download=False).classnames
        return names[:self.setting("OPENSET.SEEN_CLASSES")]
