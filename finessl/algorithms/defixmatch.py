"""DeFixMatch (Schmutz, Humbert & Mattei, "Don't fear the unlabelled: safe
semi-supervised learning via debiasing", ICLR 2023).

FixMatch whose unlabeled loss is debiased by a control variate: the same consistency
loss, computed on the labeled images as if they were unlabeled, is subtracted, so that
L_u - L_deb is an unbiased estimate of zero-mean noise whatever the pseudo-labels'
quality. With z_x, z_xs the logits of the weak and strong views of the labeled images,
z_w, z_s those of the unlabeled ones and tau = ``th``:
- L_x = (CE(z_x, y) + CE(z_xs, y)) / 2                       (both labeled views)
- L_u = mean_b 1[max softmax(z_w,b) >= tau] CE(z_s,b, argmax softmax(z_w,b))   (FixMatch)
- L_deb = mean_i 1[max softmax(z_x,i) >= tau] CE(z_xs,i, argmax softmax(z_x,i))
  (the labels y are not used: the labeled images play unlabeled ones)
- L = L_x + w_con * (L_u - L_deb)
as USB's ``defixmatch.py`` has it (its hard labels: ``T`` plays no part). USB's
defaults are tau 0.95 and lambda_u 1; here tau and lambda are the shared ``th`` and
``w_con`` of every method (0.7 and 3 by default; the Fashion-MNIST demo's w_con is 1.0).
Wherever the weak labeled view passes tau on its label, the strong labeled view's
cross-entropy to that label weighs 1/2 - w_con, negative for any w_con over 1/2: the
loss is then unbounded below (docs/results.md shows runs this makes fall). L_u is over
both strong views u_s1, u_s2 as for every method here (USB: one); the labeled images
have one strong view (``x_s``).

The strong labeled view joins the one forward of the step (``labeled_views``): L_x,
and under ``dls`` the aux head's L_x_aux, average over both labeled views, and under
``bms`` (``bms_labeled``) both get the margin. BMS and DLS act on L_u as for FixMatch;
L_deb stays the paper's (main-head mask and pseudo-labels, no margin). No own keys.
"""
from __future__ import annotations

import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.fixmatch import FixMatch


@register("defixmatch", order=62)
class DeFixMatch(FixMatch):
    labeled_strong = True
    labeled_views = ("x", "x_s")

    def extra_losses(self, logits_u, pl):
        n = len(self.outputs.batch["y"])
        logits_x, logits_xs = self.outputs.logits_x[:n], self.outputs.logits_x[n:]
        # FixMatch's (stateless) rule on the weak labeled view, labels ignored
        anti = self.pseudo_label(logits_x.detach(), {})
        per_sample = F.cross_entropy(logits_xs, anti.targets, reduction="none")
        return {"debias": -self.cfg.w_con * (per_sample * anti.weight).mean()}
