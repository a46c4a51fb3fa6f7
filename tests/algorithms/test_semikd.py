"""SemiKD (docs/semikd.md): the step against hand-computed values, the adaptive weight
over several windows and epochs, a frozen teacher that gets no gradient, the teacher
rebuilt from its run, exact resume through a preemption, a tiny teacher teaching a
student through main.py, and the one-line errors of a teacher that does not fit.
The student's backbones and the configs: test_semikd_student.py, test_semikd_configs.py."""
from __future__ import annotations

import glob
import json
import math
import os
import signal
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import TINY_VIT, main_inprocess, tiny_args
from fakedata import write_image_folder
from finessl.algorithms import build_algorithm
from finessl.algorithms.semikd import Teacher, checksum
from finessl.config import get_cfg_defaults
from finessl.engine import rundir, signals
from finessl.engine.checkpoint import LAST
from finessl.engine.predict import predict
from finessl.engine.teacher import load_teacher
from finessl.engine.run import restore
from finessl.engine.trainer import Trainer
from finessl.models import build_model
from finessl.config_load import load_config
from helpers import TableModel, assert_runs_equal, assert_user_error, ce, id_images, one_line_error

L = math.log
CPU = torch.device("cpu")
# Not the teacher's model (its prompts are 4 long): what is rebuilt from a KD run's
# config must be the student.
STUDENT = ["KD", "True", "stu_backbone", TINY_VIT, "stu_pretrained", "none",
           "stu_vpt_deep", "True", "stu_vpt_len", "2"]


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def soft_ce(z, p, t=1.0):
    """-sum_c p_c log_softmax(z / t)_c, by hand."""
    lse = L(sum(math.exp(v / t) for v in z))
    return -sum(pc * (v / t - lse) for v, pc in zip(z, p))


def _algo(main, aux, teacher_main, teacher_aux, num_unlabeled=4, **keys):
    cfg = get_cfg_defaults()
    cfg.algorithm = "semikd"
    for key, value in keys.items():
        setattr(cfg, key, value)
    algo = build_algorithm(cfg, TableModel(main, aux), main.shape[1], num_unlabeled, CPU)
    teacher = Teacher(TableModel(teacher_main, teacher_aux), None, "table", 0.0)
    algo.set_teacher(lambda: teacher)
    return algo


# ---- the step by hand ---------------------------------------------------------------
def test_one_step_against_hand_computed_losses_margins_and_weight():
    """ids: 0 labeled (y 1); 1, 2 weak views of u0, u1; 3, 4 their strong views; 5, 6
    second strong views, which SemiKD never reads (extreme logits would show)."""
    main = torch.tensor([[2.0, 0, 0], [L(8.0), 0, 0], [0, L(2.0), 0], [1.0, 0, 0],
                         [0, 1.0, 0], [50.0, 0, 0], [0, 0, 50.0]])
    aux = torch.tensor([[0, 1.0, 0], [L(3.0), 0, 0], [0, 0, L(2.0)], [1.0, 0, 0],
                        [0, 0, 0], [0, 50.0, 0], [50.0, 0, 0]])
    t_main = torch.tensor([[9.0, 9, 9], [0, L(4.0), 0], [0, 0, L(3.0)], [0, 1.0, 0],
                           [2.0, 0, 0], [0, 0, 0], [0, 0, 0]])
    t_aux = torch.tensor([[9.0, 9, 9], [L(2.0), 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0],
                          [0, 0, 0], [0, 0, 0]])
    algo = _algo(main, aux, t_main, t_aux, alpha=10.0, beta=0.9, Tr=2.0, w_con=5.0, s_con=2.0)
    algo.memory.load(torch.tensor([0, 0, 1, -1]))  # pace [1, 1/2, 0]
    batch = {"x": id_images([0]), "y": torch.tensor([1]), "u_w": id_images([1, 2]),
             "u_s1": id_images([3, 4]), "u_s2": id_images([5, 6]),
             "u_idx": torch.tensor([3, 1]), "u_true": torch.tensor([1, 2])}
    loss, logs = algo.train_step(batch)

    ws_t = (ce([0, 1, 0], 1) + ce([2, 0, 0], 2)) / 2  # teacher: weak argmax 1, 2
    ws_s = (ce([1, 0, 0], 0) + ce([0, 1, 0], 1)) / 2  # student: weak argmax 0, 1
    r = ws_t / ws_s
    a = 0.5 * 0.9 + r * 0.5 * 0.1  # step 0 updates, from a = 0.5
    spread = (1 - 0) * 10.0 * a
    m = [0.0, (0.5 / 1.5) * spread, spread]
    loss_x = ce([2 + m[1], 0, 0 + m[1]], 1)
    loss_x_aux = ce([0, 1, 0], 1)
    loss_kd = (soft_ce([L(8), 0, 0], softmax([0, L(4), 0], 2), 2)
               + soft_ce([0, L(2), 0], softmax([0, 0, L(3)], 2), 2)) / 2
    loss_kd_aux = (soft_ce([L(3), 0, 0], softmax([L(2), 0, 0], 2), 2)
                   + soft_ce([0, 0, L(2)], softmax([0, 0, 0], 2), 2)) / 2
    # pseudo-labels 0 (conf .8, kept) and 1 (conf .5), weighted by aux conf .6 and .5
    loss_u = (ce([1, 0 + m[0], 0 + m[0]], 0) * 0.6 + ce([0 + m[1], 1, 0 + m[1]], 1) * 0.5) / 2
    loss_u_aux = soft_ce([1, 0, 0], [0.5, 0.25, 0.25])  # u0 alone is kept
    expected = loss_x + loss_x_aux + 5.0 * ((1 - a) * (loss_kd + loss_kd_aux)
                                            + a * (2.0 * loss_u + loss_u_aux))
    for key, value in {"x": loss_x, "x_aux": loss_x_aux, "kd": loss_kd, "kd_aux": loss_kd_aux,
                       "u": loss_u, "u_aux": loss_u_aux}.items():
        assert logs[f"loss/{key}"].item() == pytest.approx(value, rel=1e-5), key
    assert logs["kd/ws_ratio"].item() == pytest.approx(r, rel=1e-5)
    assert logs["kd/a"].item() == pytest.approx(a, rel=1e-6)
    assert logs["pseudo/margin_max"].item() == pytest.approx(spread, rel=1e-5)
    assert logs["kd/teacher_acc"].item() == 1.0  # the teacher's weak argmax: 1 and 2, both true
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert algo.selected.tolist() == [0, 0, 1, 0]  # u0 (index 3) learned as 0


def test_teacher_accuracy_log_counts_known_labels_only():
    t_main = torch.tensor([[0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 0, 0], [0, 0, 0]])
    algo = _algo(torch.zeros(5, 3), torch.zeros(5, 3), t_main, torch.zeros(5, 3))
    batch = {"x": id_images([0]), "y": torch.tensor([0]), "u_w": id_images([1, 2]),
             "u_s1": id_images([3, 4]), "u_s2": id_images([3, 4]),
             "u_idx": torch.tensor([0, 1]), "u_true": torch.tensor([1, -1])}
    _, logs = algo.train_step(batch)
    assert logs["kd/teacher_acc"].item() == 1.0  # u1's class is unknown: not counted


def test_adaptive_weight_over_windows_epochs_and_both_clips():
    """ep_ws 3, beta 0.5, extval 0.25, 5 steps an epoch: updates at steps 0 and 3; the
    ratios of step 4 stay in the window into the next epoch's step 0."""
    algo = _algo(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3),
                 ep_ws=3, beta=0.5, extval=0.25)
    ratios = [[4.0, 0.2, 0.2, 0.2, 0.1], [0.1, 0.05, 0.05, 0.05]]
    # epoch 0: 0.5 * .5 + 4 * .5 * .5 = 1.25 -> 1 (upper clip); then mean(.2, .2, .2):
    # 1 * .5 + .2 * .5 = 0.6; epoch 1 step 0: mean(.1, .1) -> .6 * .5 + .1 * .6 * .5 = .33;
    # step 3: mean(.05 x 3) -> .33 * .5 + .05 * .33 * .5 = .17325 -> .25 (lower clip)
    expected = [[1.0, 1.0, 1.0, 0.6, 0.6], [0.33, 0.33, 0.33, 0.25]]
    for epoch, (rs, want) in enumerate(zip(ratios, expected)):
        algo.on_epoch_start(epoch)
        got = [algo.update_mixing_weight(torch.tensor(r)).item() for r in rs]
        assert got == pytest.approx(want, rel=1e-6)
        if epoch == 0:
            assert algo.ratios.tolist() == pytest.approx([0.1])  # not cleared by the epoch
    assert algo.step == 4 and algo.ratios.tolist() == []


def test_under_fp16_the_weight_is_rounded_at_every_update_as_released():
    """a = 0.5 and r = 1.01: a * 0.99 + r * a * 0.01 = 0.50005, less than half an fp16
    ULP (2.4e-4) above 0.5, so the released fp16 a never moves; fp32 a does."""
    moved = {}
    for dtype in (torch.float16, torch.float32):
        algo = _algo(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3),
                     torch.zeros(1, 3), ep_ws=1)
        algo.mixing, algo.ratios = torch.tensor(0.5, dtype=dtype), torch.zeros(0, dtype=dtype)
        for _ in range(10):
            a = algo.update_mixing_weight(torch.tensor(1.01))
        assert a.dtype == dtype
        moved[dtype] = a.item()
    assert moved[torch.float16] == 0.5
    assert moved[torch.float32] == pytest.approx(0.5 * (0.99 + 0.0101) ** 10, rel=1e-6)


# ---- the teacher is frozen -----------------------------------------------------------
def _tiny(vpt=True, seed=0):
    cfg = get_cfg_defaults()
    cfg.backbone, cfg.pretrained, cfg.vpt_deep, cfg.vpt_len = TINY_VIT, "none", vpt, 4
    torch.manual_seed(seed)
    return cfg, build_model(cfg, [f"c{i}" for i in range(5)], CPU, half=False)


def test_the_teacher_does_not_change_and_gets_no_gradient():
    _, teacher_model = _tiny(seed=1)
    before = {n: p.detach().clone() for n, p in teacher_model.named_parameters()}
    teacher = Teacher(teacher_model, 32, "tiny", checksum(before.values()))
    cfg, student = _tiny(seed=2)
    cfg.algorithm = "semikd"
    algo = build_algorithm(cfg, student, 5, 8, CPU)
    algo.set_teacher(lambda: teacher)
    trained = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    optim = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(0)
    images = lambda: torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    student.train()
    for _ in range(2):
        batch = {"x": images(), "y": torch.tensor([0, 1, 2, 3]), "u_w": images(),
                 "u_s1": images(), "u_s2": images(), "u_idx": torch.arange(4),
                 "u_true": torch.tensor([0, 1, 2, 3])}
        loss, _ = algo.train_step(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    for name, p in teacher_model.named_parameters():
        assert not p.requires_grad and p.grad is None, name
        assert torch.equal(p, before[name]), name
    assert not teacher_model.training
    moved = [n for n, p in student.named_parameters() if p.requires_grad
             and not torch.equal(p, trained[n])]
    assert any("peft" in n for n in moved) and any("head" in n for n in moved)


def test_views_of_another_size_are_resized_for_the_teacher_after_its_normalisation():
    _, model = _tiny(seed=1)
    teacher = Teacher(model, 32, "tiny", 0.0)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    small = torch.nn.functional.interpolate(images.float(), size=32, mode="bilinear")
    with torch.no_grad():
        expected, _ = model((small - model.backbone.mean) / model.backbone.std)
    logits, _ = teacher(images)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_the_students_aux_head_starts_apart_from_its_main_head_as_released():
    cfg, student = _tiny()
    assert torch.equal(student.aux_head.weight, student.head.weight)  # FineSSL's copy
    cfg.algorithm = "semikd"
    build_algorithm(cfg, student, 5, 8, CPU)
    assert not torch.equal(student.aux_head.weight, student.head.weight)
    assert torch.allclose(student.aux_head.weight.norm(dim=-1), torch.ones(5))


# ---- a teacher run, trained here --------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(cifar_root, tmp_path_factory):
    """A tiny FineSSL run (VPT-deep 4) as main.py leaves it: config.yaml and checkpoints."""
    folder = str(tmp_path_factory.mktemp("teacher"))
    cfg = load_config(None, tiny_args(cifar_root, folder, num_epochs=2, total_steps=12))
    rundir.save_run_config(cfg, 1, folder)
    trainer = Trainer(cfg, folder, seed=1)
    result = trainer.fit()
    return SimpleNamespace(folder=folder, top1=result["last_top1"])


def _kd_trainer(cifar_root, folder, teacher, write_split=True, **overrides):
    opts = tiny_args(cifar_root, folder, **overrides) + STUDENT + ["resume", teacher]
    return Trainer(load_config(None, opts), folder, seed=3, write_split=write_split)


@pytest.mark.slow  # trains the tiny teacher run (once per module)
def test_the_loaded_teacher_is_the_trained_run(teacher_run, cifar_root, tmp_path):
    trainer = _kd_trainer(cifar_root, str(tmp_path / "kd"), teacher_run.folder)
    teacher = trainer.algorithm.teacher
    images, labels = zip(*[trainer.data.test[i][:2] for i in range(len(trainer.data.test))])
    logits, _ = teacher(torch.stack(images))
    top1 = (logits.argmax(-1) == torch.tensor(labels)).float().mean().item()
    assert top1 == pytest.approx(teacher_run.top1)  # its tensors and its untrained tower


@pytest.mark.slow  # trains the tiny teacher run (once per module)
def test_kill_and_resume_in_kd_mode_is_exact(teacher_run, cifar_root, tmp_path,
                                            figures_not_rasterised):
    """SIGUSR1 (a preemption) at epoch 2 step 2 of 5, with a updated every 2 steps: the
    window of ratios, the step within the epoch, a and the pace memory all come back, and
    the run ends bit-identical to one never stopped."""
    settings = dict(num_epochs=2, total_steps=5, print_freq=5, ep_ws=2, **{"DATA.NUM_TEST": 40})
    reference = _kd_trainer(cifar_root, str(tmp_path / "reference"), teacher_run.folder,
                            **settings)
    reference.fit()
    stopped = _kd_trainer(cifar_root, str(tmp_path / "stopped"), teacher_run.folder, **settings)
    step, calls = stopped.algorithm.train_step, [0]

    def signal_at(batch):
        calls[0] += 1
        if calls[0] == 7:
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(batch)
    stopped.algorithm.train_step = signal_at
    with signals.handling(), pytest.raises(signals.Preempted):
        stopped.fit()
    saved = torch.load(os.path.join(tmp_path, "stopped", LAST), weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 2)
    algo = saved["algorithm"]
    assert set(algo) == {"selected", "mixing", "ratios", "step", "teacher_checksum"}
    assert algo["step"].item() == 2 and len(algo["ratios"]) == 1  # step 1's, since step 0's update

    resumed = _kd_trainer(cifar_root, str(tmp_path / "stopped"), teacher_run.folder,
                          write_split=False, **settings)
    restore(resumed, str(tmp_path / "stopped"))
    resumed.fit()
    assert_runs_equal(reference, resumed)
    assert reference.algorithm.state_dict()["mixing"].item() != 0.5  # a moved, the same way


@pytest.mark.slow  # trains the tiny teacher run (once per module)
def test_resuming_with_another_teacher_is_refused(teacher_run, cifar_root, tmp_path):
    other = tmp_path / "other_teacher"
    other.mkdir()
    state = torch.load(os.path.join(teacher_run.folder, LAST), weights_only=True)
    name = next(n for n in state["model"] if "peft" in n)
    state["model"][name] = state["model"][name] + 1.0
    torch.save(state, other / LAST)
    kd = _kd_trainer(cifar_root, str(tmp_path / "kd"), teacher_run.folder)
    kd.algorithm.teacher  # noqa: B018  (loaded, as training would)
    kd.save(1)  # what the run's first epoch leaves
    resumed = _kd_trainer(cifar_root, str(tmp_path / "kd"), str(other), write_split=False)
    message = one_line_error(restore, resumed, str(tmp_path / "kd"))
    assert "is not the teacher this run started with" in message


@pytest.mark.slow  # trains the tiny teacher run (once per module)
def test_teacher_tensors_or_classes_that_do_not_fit_are_one_line(teacher_run, cifar_root,
                                                                 tmp_path):
    cfg = load_config(None, tiny_args(cifar_root, str(tmp_path)) + STUDENT
                      + ["resume", teacher_run.folder])
    state = torch.load(os.path.join(teacher_run.folder, LAST), weights_only=True)
    data = SimpleNamespace(classnames=list(state["classnames"]), mean=(0.5,) * 3, std=(0.25,) * 3)
    state["model"].pop(next(iter(state["model"])))
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with_broken = cfg.clone()
    with_broken.defrost()
    with_broken.teacher = str(broken)
    message = one_line_error(load_teacher, with_broken, data, CPU)
    assert message.startswith(f"teacher: {broken} does not fit the model its config describes")
    data.classnames = data.classnames[::-1]
    message = one_line_error(load_teacher, cfg, data, CPU)
    assert "was trained on 10 classes (airplane" in message


# ---- through main.py --------------------------------------------------------------------
@pytest.mark.slow  # 30 KD steps, after the tiny teacher run
def test_a_tiny_teacher_teaches_a_student_through_main(teacher_run, cifar_root, tmp_path,
                                                      figures_not_rasterised):
    out = tmp_path / "kd"
    code, _, err = main_inprocess(tiny_args(cifar_root, str(out), num_epochs=2, total_steps=15,
                                            **{"DATA.NUM_TEST": 100})
                                  + STUDENT + ["resume", teacher_run.folder])
    assert code == 0, err
    result = json.load(open(out / "results.json"))
    assert result["algorithm"] == "semikd"
    assert result["last_top1"] >= 0.3, result["last_top1"]  # 10 classes: chance is 0.1
    recorded = yaml.safe_load(open(out / "config.yaml"))
    assert recorded["teacher"] == teacher_run.folder and recorded["resume"] is None
    assert recorded["backbone"] == TINY_VIT and recorded["stu_backbone"] == TINY_VIT
    events = b"".join(open(p, "rb").read() for p in glob.glob(str(out / "tensorboard" / "*")))
    for tag in (b"train/kd/a", b"train/kd/ws_ratio", b"train/loss/kd"):
        assert tag in events, tag
    state = torch.load(out / LAST, weights_only=True)
    assert state["model"]["backbone.peft.0.prompts"].shape[1] == 2  # the student's prompts
    images = os.path.join(write_image_folder(str(tmp_path / "images"), bad_files=False),
                          "unlabeled")
    # predict rebuilds the student from the KD run's config (the teacher's would not fit)
    rows = predict(str(out), images, str(tmp_path / "predictions.csv"), opts=["num_workers", "0"])
    assert rows["predicted"] == 12 and rows["skipped"] == 0, rows


@pytest.mark.slow  # after the tiny teacher run
def test_a_teacher_config_mismatch_is_one_line_exit_2(teacher_run, cifar_root, tmp_path):
    code, _, err = main_inprocess(tiny_args(cifar_root, str(tmp_path / "kd"), vpt_deep=False)
                                  + STUDENT + ["resume", teacher_run.folder])
    line = assert_user_error(code, err)
    assert f"teacher: {teacher_run.folder} was trained with vpt_deep True (this config: False)" \
        in line, line
    # --dry-run checks the teacher as the run does: the same line, and no folder left
    code, _, err = main_inprocess(tiny_args(cifar_root, str(tmp_path / "dry"), vpt_deep=False)
                                  + STUDENT + ["resume", teacher_run.folder, "--dry-run"])
    assert assert_user_error(code, err) == line
    assert not os.path.exists(tmp_path / "dry") and not os.path.exists(tmp_path / "kd")
