"""SemiKD's configs and the released command line (docs/semikd.md): the authors'
*_kd.yaml and README line load unchanged, so do the six shipped ones, and ``resume``
names the teacher unless it names a SemiKD run."""
from __future__ import annotations

import glob
import os

import pytest

from conftest import REPO
from helpers import one_line_error, released_yaml
from finessl.engine import rundir
from finessl.config_load import load_config


# The authors' configs/peft/cifar100_N4_kd.yaml, as released.
RELEASED_KD_YAML = released_yaml("cifar100_N4_kd.yaml")
README_KD = ["KD", "True", "vpt_deep", "True", "stu_backbone", "IN21K-ViT-S/16",
             "stu_vpt_deep", "True", "stu_vpt_len", "50", "resume"]


@pytest.fixture
def teacher_folder(tmp_path):
    """A folder a FineSSL run would have written (config.yaml says finessl)."""
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.yaml").write_text("algorithm: finessl\n")
    return str(folder)


def _check_readme_config(cfg, teacher):
    assert cfg.algorithm == "semikd" and cfg.KD and cfg.teacher == teacher
    assert cfg.resume is None and cfg.vpt_deep and cfg.stu_vpt_deep and cfg.stu_vpt_len == 50
    assert (cfg.alpha, cfg.w_con, cfg.s_con, cfg.beta, cfg.DATA.MU_U) == (10.0, 5.0, 1.0, 0.99, 2)
    assert cfg.stu_backbone == "IN21K-ViT-S/16"


def test_the_released_kd_yaml_and_readme_command_line_load_unchanged(tmp_path, teacher_folder):
    path = tmp_path / "cifar100_N4_kd.yaml"
    path.write_text(RELEASED_KD_YAML)
    cfg = load_config(str(path), README_KD + [teacher_folder])
    _check_readme_config(cfg, teacher_folder)
    assert cfg.output_dir == "out/cifar-100-kd/N4" and cfg.lora_dim == 16


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "peft", "*_kd.yaml"))))
def test_each_shipped_kd_yaml_loads_with_the_readme_line(path, teacher_folder):
    cfg = load_config(path, README_KD + [teacher_folder])
    _check_readme_config(cfg, teacher_folder)
    name = os.path.basename(path)[:-len("_kd.yaml")]
    plain = load_config(os.path.join(REPO, "configs", "peft", f"{name}.yaml"))
    for key in ("DATA.NAME", "DATA.NUM_L", "DATA.BATCH_SIZE", "lora_dim", "th", "smoothing"):
        node_kd, node = cfg, plain
        for part in key.split("."):
            node_kd, node = node_kd[part], node[part]
        assert node_kd == node, key


def test_resume_names_the_teacher_unless_it_is_a_kd_run(tmp_path, teacher_folder):
    kd_run = tmp_path / "kd_run"
    kd_run.mkdir()
    cfg = load_config(None, ["KD", "True", "resume", teacher_folder, "seed", "1",
                             "output_dir", str(kd_run)])
    rundir.save_run_config(cfg, 1, str(kd_run))
    for opts in (["resume", str(kd_run)], ["KD", "True", "resume", str(kd_run)]):
        again = load_config(None, opts)
        assert again.resume == str(kd_run) and again.teacher == teacher_folder
    file_teacher = tmp_path / "teacher" / "checkpoint_epoch30.pt"
    file_teacher.write_bytes(b"")
    assert load_config(None, ["KD", "True", "resume", str(file_teacher)]).teacher == str(file_teacher)


@pytest.mark.parametrize("opts, needle", [
    (["KD", "True"], "KD True needs a teacher: 'resume TEACHER'"),
    (["KD", "True", "resume", "/no/such/run"], "resume: /no/such/run does not exist"),
])
def test_kd_switch_mistakes_are_one_line(opts, needle):
    assert needle in one_line_error(load_config, None, opts)


def test_kd_true_on_the_teachers_own_yaml_distils_it(teacher_folder):
    """The demo's FineSSL YAML (algorithm finessl) with KD True: its keys are the teacher's."""
    demo = os.path.join(REPO, "configs", "demo", "fashion_mnist_N4.yaml")
    cfg = load_config(demo, ["KD", "True", "resume", teacher_folder])
    assert cfg.algorithm == "semikd" and cfg.teacher == teacher_folder and cfg.finetune
