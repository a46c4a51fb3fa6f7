"""SAW (``imb saw``) on FixMatch against a plain transcription of USB's SAWWeightsHook
and weighted losses (fp64, several epochs, gradients and weights included), and exact
resume."""
from __future__ import annotations

import torch

from helpers import IMB_C as C
from helpers import IMB_LABELED_COUNTS as LABELED_COUNTS
from helpers import assert_imb_resume_exact, build_imb, compare_grads, fixmatch_loss, imb_batch
from helpers import leaf_params, weak_probs

NUM_U = 12


def usb_effective_weights(y_cnt):
    """USB's effective_weights, as written there."""
    n = torch.sum(y_cnt) / len(y_cnt)
    beta = (n - 1) / n
    effective_num = 1.0 - torch.pow(beta, y_cnt)
    weights = (1.0 - beta) / effective_num
    return weights / weights.sum() * len(y_cnt)


def test_saw_matches_a_transcription_of_usb_over_epochs_gradients_included():
    cfg, model, algo = build_imb("saw", num_unlabeled=NUM_U, th=0.4)
    named = list(model.named_parameters())
    optim = torch.optim.SGD([q for _, q in named], lr=0.5)
    lb_weights = usb_effective_weights(LABELED_COUNTS.double())
    ulb_weights = usb_effective_weights(torch.full((C,), NUM_U / C, dtype=torch.float64))
    last_pred = {}
    plan = [0, 0, 1, 1, 2, 3]
    for step, epoch in enumerate(plan):
        if step == 0 or epoch != plan[step - 1]:
            algo.on_epoch_start(epoch)
            if epoch > 0:  # after an epoch: counts of the last predictions, at least 1
                counts = torch.ones(C, dtype=torch.float64)
                for c in range(C):
                    counts[c] = max(sum(1 for v in last_pred.values() if v == c), 1)
                ulb_weights = usb_effective_weights(counts)
        b = imb_batch(step, num_unlabeled=NUM_U)
        p = leaf_params(named)
        expected, _, _ = fixmatch_loss(p, b, cfg.th, cfg.w_con, lb_weights=lb_weights,
                                       ulb_weights=ulb_weights)
        for i, c in zip(b["u_idx"].tolist(), weak_probs(p, b).argmax(-1).tolist()):
            last_pred[i] = c
        optim.zero_grad()
        loss, _ = algo.train_step(b)
        assert abs(loss.item() - expected.item()) <= 1e-6
        loss.backward()
        compare_grads(expected, p, [q for _, q in named])
        assert torch.allclose(algo.saw_ulb_weights, ulb_weights, atol=1e-12, rtol=0)
        optim.step()
    assert not torch.allclose(ulb_weights, torch.ones(C, dtype=torch.float64))  # re-estimated
    assert lb_weights[2] > lb_weights[1] > lb_weights[0]  # the rare class weighs most


def test_saw_weights_the_terms_with_dls_and_bms_on():
    _, _, algo = build_imb("saw", num_unlabeled=NUM_U, bms=True, dls=True)
    algo.saw_ulb_weights.copy_(torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64))
    loss, logs = algo.train_step(imb_batch(0, num_unlabeled=NUM_U))
    assert torch.isfinite(loss) and algo.method_label() == "fixmatch+saw+bms+dls"
    assert {"loss/x", "loss/u", "loss/x_aux", "loss/u_aux"} <= logs.keys()


def test_saw_resume_after_a_crash_mid_epoch_is_exact(cifar_root, tmp_path):
    assert_imb_resume_exact("saw", cifar_root, tmp_path)
