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

import open_clip

import finessl.models.cnn  # noqa: F401  (registers the CNN strategies: each gets its stu_ switch)
import finessl.models.peft  # noqa: F401  (registers the ViT strategies)
from finessl.config import declare, positive
from finessl.errors import UserError
from finessl.models.clip import resolve_model_name
from finessl.models.families import family_of
from finessl.models.methods import PEFT_METHODS
from finessl.models.timm_vit import TimmViT, timm_vit_weights

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
    """``pretrained`` of the student: 'default' made concrete for its family; a timm ViT's
    weights are found (or fetched) now, so a miss is one line naming ``stu_pretrained``."""
    value = cfg.stu_pretrained.strip()
    family = family_of(backbone)
    if family is TimmViT:
        return timm_vit_weights(backbone, value, cfg.cache_dir, key="stu_pretrained") or "none"
    if value.lower() != "default":
        return value
    if family.name == "timm_cnn":
        return "imagenet"  # the weights a pip package ships, else the timm loader says what to do
    tags = open_clip.list_pretrained_tags_by_model(resolve_model_name(backbone))
    if not tags:
        raise UserError(f"stu_pretrained: {backbone} has no open_clip pretrained weights; give a "
                        f"local file (stu_pretrained /path/to/weights.pt) or none (random init)")
    return "openai" if "openai" in tags else tags[0]


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
