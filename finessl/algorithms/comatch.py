"""CoMatch (Li, Xiong & Hoi, "CoMatch: Semi-supervised Learning with Contrastive Graph
Regularization", ICCV 2021), as USB runs it.

A projection head g (Linear-ReLU-Linear, ``COMATCH.PROJ`` outputs, L2-normalised) embeds
the backbone's features; a queue of the last ``COMATCH.QUEUE`` (embedding, class
distribution) pairs holds the weak unlabeled views (their aligned prediction) and the
labeled images (their one-hot label). With q = softmax(z_w), w = g(f_w), T =
``COMATCH.T``, alpha = ``COMATCH.ALPHA``, tau = ``th``:
- distribution alignment to the uniform prior over a queue of the last
  ``COMATCH.DA_LEN`` batch means, as SimMatch's (simmatch.align_to_uniform): q~;
- memory smoothing, once the queue has been filled: A = softmax_j(w . k_j / T),
  qhat = alpha q~ + (1 - alpha) A P (P: the queue's distributions); before: qhat = q~;
- L_u = mean_b [max qhat_b >= tau] CE(z_s, qhat_b) (soft target);
- the queue takes (w, q~) of the weak views and (g(f_x), onehot(y)) of the labeled
  batch of every rank, after the smoothing;
- pseudo-label graph W = qhat qhat^T with 1 on the diagonal, entries below
  ``COMATCH.CONTRAST_TH`` set to 0, rows normalised; embedding graph
  S = softmax_rows(s1 s2^T / T) of the two strong views' embeddings;
  L_c = mean_b sum_j -W_bj log(S_bj + 1e-7), weight ``COMATCH.CONTRAST`` (per rank).
As USB: smoothing from the second epoch on, once more rows were written than the queue
holds (USB: ``it > queue_batch``, the same count); the queue starts at zeros. USB's
usb_cv defaults: T 0.2, alpha 0.9, da_len 32, proj 64, contrast_p_cutoff 0.8, weight 1,
queue 32 x (1 + uratio) x batch rows; the paper's queue is 2560 (CIFAR), taken here. Its
tau (p_cutoff 0.95) is ``th`` here, as for every method of the comparison. L_u is taken
over both strong views (USB: the first). The queue is a ring indexed modulo its size,
so any size works once it holds one step's rows (fewer: a one-line error). BMS puts its
margin on argmax qhat. ``selected`` (the learning pace under BMS) is max qhat >= ``pace_th``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from finessl.algorithms.base import register
from finessl.algorithms.pseudo_labeling import PseudoLabeling, PseudoLabels
from finessl.algorithms.simmatch import align_to_uniform, embed, projection_head, unit_interval
from finessl.config import declare, non_negative, positive
from finessl.errors import UserError

# Hyperparameters: the paper's queue, USB's (usb_cv) others.
declare("COMATCH.QUEUE", 2560, "rows (embedding, distribution) of the memory-smoothing queue",
        check=positive)
declare("COMATCH.T", 0.2, "temperature of the embedding similarities", check=positive)
declare("COMATCH.ALPHA", 0.9, "weight of the model's own prediction in the smoothed pseudo-label",
        check=unit_interval)
declare("COMATCH.PROJ", 64, "size of the projection head's embedding", check=positive)
declare("COMATCH.DA_LEN", 32, "batch means in the distribution-alignment queue", check=positive)
declare("COMATCH.CONTRAST_TH", 0.8, "pseudo-label similarity below which two images are not "
        "connected in the graph", check=unit_interval)
declare("COMATCH.CONTRAST", 1.0, "weight of the graph contrastive loss", check=non_negative)


@register("comatch", order=46)
class CoMatch(PseudoLabeling):
    def extra_modules(self, feat_dim):
        return {"proj": projection_head(feat_dim, self.cfg.COMATCH.PROJ)}

    def initial_statistics(self):
        """The queue of embeddings and distributions, its write position and how many
        rows were ever written, the alignment queue and its pointer, the epoch."""
        cfg, c, dev = self.cfg.COMATCH, self.num_classes, self.device
        zero = torch.zeros((), dtype=torch.long, device=dev)
        return {"queue_feats": torch.zeros(cfg.QUEUE, cfg.PROJ, device=dev),
                "queue_probs": torch.zeros(cfg.QUEUE, c, device=dev),
                "queue_ptr": zero.clone(), "queue_written": zero.clone(),
                "da_queue": torch.zeros(cfg.DA_LEN, c, device=dev), "da_ptr": zero.clone(),
                "epoch": zero.clone()}

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self.epoch.fill_(epoch)

    def push(self, feats: torch.Tensor, probs: torch.Tensor) -> None:
        """Write rows into the ring queue at its pointer."""
        size = len(self.queue_feats)
        if len(feats) > size:
            raise UserError(f"COMATCH.QUEUE: {size} rows cannot hold one step's {len(feats)} "
                            "(labeled + unlabeled images of all processes); raise it")
        rows = (self.queue_ptr + torch.arange(len(feats), device=feats.device)) % size
        self.queue_feats[rows] = feats.to(self.queue_feats.dtype)
        self.queue_probs[rows] = probs.to(self.queue_probs.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(feats)) % size)
        self.queue_written.add_(len(feats))

    def pseudo_label(self, logits_w, batch):
        cfg, out, dist = self.cfg.COMATCH, self.outputs, self.dist
        head = self.modules["proj"]
        aligned = align_to_uniform(torch.softmax(logits_w, dim=-1), self.da_queue, self.da_ptr)
        with torch.no_grad():
            weak = dist.gather(embed(head, out.feat_w)).to(logits_w.dtype)
            labeled = dist.gather(embed(head, out.feat_x.detach()))
        probs = aligned
        if self.epoch > 0 and self.queue_written > len(self.queue_feats):
            sim = torch.softmax(weak @ self.queue_feats.to(weak.dtype).t() / cfg.T, dim=1)
            probs = cfg.ALPHA * aligned + (1 - cfg.ALPHA) * sim @ self.queue_probs.to(weak.dtype)
        onehot = F.one_hot(dist.gather(out.batch["y"]), self.num_classes)
        self.push(torch.cat([weak, labeled.to(weak.dtype)]),
                  torch.cat([aligned, onehot.to(aligned.dtype)]))
        conf, targets = probs.max(dim=-1)
        return PseudoLabels(targets, (conf >= self.cfg.th).float(), self.pace_selected(conf), probs)

    def extra_losses(self, logits_u, pl):
        cfg = self.cfg.COMATCH
        graph = pl.soft @ pl.soft.t()
        graph.fill_diagonal_(1)
        graph = graph * (graph >= cfg.CONTRAST_TH)
        graph = graph / graph.sum(dim=1, keepdim=True)
        s1, s2 = embed(self.modules["proj"], self.outputs.feat_u).to(graph.dtype).chunk(2)
        sim = torch.exp(s1 @ s2.t() / cfg.T)
        sim = sim / sim.sum(dim=1, keepdim=True)
        loss = -(torch.log(sim + 1e-7) * graph).sum(dim=1).mean()
        return {"contrast": cfg.CONTRAST * loss}
