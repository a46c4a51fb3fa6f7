"""FineSSL (Gan & Wei, "Erasing the Bias: Fine-Tuning Foundation Models for
Semi-Supervised Learning", ICML 2024), as released by the authors (docs/method.md §3).

FixMatch's pseudo-labelling rule (main head, weak view, confidence >= 0.7) with both
of the paper's components on:
- Balanced Margin Softmax: the class learning pace beta(k) (share of confident
  pseudo-labels of class k this epoch) sets a margin m(k) added to the non-target
  logits of every sample of class k, so slow classes get pushed harder and the
  aggregated bias of the pretrained model is erased;
- Decoupled Label Smoothing: an auxiliary head on detached features, trained on
  smoothed pseudo-labels, gives calibrated confidences that weight every unlabeled
  sample of the main loss, without flattening the main head.
The composition itself lives in ``pseudo_labeling.PseudoLabeling``.
"""
from __future__ import annotations

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch


@register("finessl", order=80)
class FineSSL(FixMatch):
    uses_finessl_components = True
