"""Pseudo-Label (Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised
Learning Method for Deep Neural Networks", ICML 2013 Workshop).

The model's own hard prediction on an unlabeled image is its target: L_u =
mean_b 1[max softmax(z_w) >= tau] * CE(z_w, argmax z_w), on the weak view itself
(no strong views: no consistency between augmentations), tau = ``th``.
"""
from __future__ import annotations

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch


@register("pseudolabel", order=20)
class PseudoLabel(FixMatch):
    consistency = False
