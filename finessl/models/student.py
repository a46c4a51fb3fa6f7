"""SemiKD's student (docs/semikd.md): the model a distillation run trains, described
by the ``stu_*`` keys beside the teacher's keys.

The released code names the student ``stu_backbone`` and gives it its own switches
for the strategies the paper uses (``stu_vpt_deep``, ``stu_vpt_len``, ``stu_adapter``,
``stu_lora``, ``stu_adaptformer``, ``stu_finetune``); every other key is shared with
the teacher. Here every registered fine-tuning strategy has its ``stu_`` switch (also
``stu_bias_tuning``, ``stu_ssf``, ``stu_bn_tuning``, ``stu_vpt_shallow``), so whatever
serves the student's backbone family can be chosen for it alone; the strategies'
sizes (``lora_dim``, ``adapter_dim``, ``ffn_num``, ``partial``, ...) stay shared, as
released. :func:`student_config` is the config the student is built from: this run's
config with the ``stu_`` values in the teacher's keys.
"""
from __future__ import annotations

import finessl.models.cnn  # noqa: F401  (registers the CNN strategies: each gets its stu_ switch)
import finessl.models.peft  # noqa: F401  (registers the ViT strategies)
import finessl.models.timm_vit  # noqa: F401  (registers the timm ViT family: the IN21K-* students)
from finessl.config import declare, positive
from finessl.errors import UserError
from finessl.models.families import family_of
from finessl.models.methods import PEFT_METHODS

# The released student names (trainer_kd.py: timm's ``pretrained=True`` models), mapped to
# the weights they loaded then: AugReg, IN-21k pretrained then IN-1k fine-tuned at 224 px
# (timm >= 0.9 spells it ``augreg_in21k_ft_in1k``; its default for B/16 is another one).
STUDENT_ALIASES = {
    "IN21K-ViT-B/16": "timm:vit_base_patch16_224.augreg_in21k_ft_in1k",
    "IN21K-ViT-S/16": "timm:vit_small_patch16_224.augreg_in21k_ft_in1k",
    "IN21K-ViT-T/16": "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "IN21K-ViT-B/32": "timm:vit_base_patch32_224.augreg_in21k_ft_in1k",
}

declare("stu_backbone", "IN21K-ViT-S/16", "SemiKD student backbone: IN21K-ViT-T/16, -S/16, -B/16, "
        "-B/32 (the released timm ViTs), any timm:NAME (ViT or CNN) or open_clip name")
declare("stu_pretrained", "default", "SemiKD student weights: 'default' (IN21K-* and timm ViTs: "
        "timm's weights from the Hugging Face / timm cache; open_clip: 'openai'; timm CNNs: "
        "'imagenet'), a tag, a local file, or 'none' (random init)")
declare("stu_vpt_len", 50, "SemiKD student: prompt tokens per block (the teacher's is vpt_len)",
        check=positive)
STUDENT_SWITCHES = tuple(sorted(PEFT_METHODS.names()))  # the strategies each with a stu_ switch
for _name in STUDENT_SWITCHES:
    declare(f"stu_{_name}", False, f"SemiKD student: `{_name}` on the student (the teacher's is "
            f"`{_name}`)")


def student_backbone(cfg) -> str:
    """The backbone name of the student: a released ``IN21K-*`` name mapped to timm's."""
    return STUDENT_ALIASES.get(cfg.stu_backbone, cfg.stu_backbone)


def _pretrained(backbone: str, cfg) -> str:
    """``pretrained`` of the student: ``stu_pretrained`` as its family reads it ('default'
    made concrete: :meth:`~finessl.models.families.BackboneFamily.student_pretrained`)."""
    return family_of(backbone).student_pretrained(backbone, cfg.stu_pretrained.strip(),
                                                  cfg.cache_dir)


def student_config(cfg):
    """This run's config with the student in the teacher's keys: ``backbone`` <-
    ``stu_backbone``, ``pretrained`` <- ``stu_pretrained``, ``vpt_len`` <-
    ``stu_vpt_len`` and every strategy switch <- its ``stu_`` switch. Frozen."""
    student = cfg.clone()
    student.defrost()
    student.backbone = student_backbone(cfg)
    student.pretrained = _pretrained(student.backbone, cfg)
    student.vpt_len = cfg.stu_vpt_len
    for name in STUDENT_SWITCHES:
        student[name] = cfg[f"stu_{name}"]
    if student.vpt_deep and student.vpt_shallow:
        raise UserError("stu_vpt_deep and stu_vpt_shallow are both True: choose one")
    student.freeze()
    return student
