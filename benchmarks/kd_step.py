"""Cost of one SemiKD step against a FineSSL step of the student alone, measured in
one run (the two alternate, step by step, so both see the same machine), printed as a
ratio, with the teacher's no-grad forward timed on its own beside them.

    python benchmarks/kd_step.py                    # released: ViT-B/16 VPT-deep 50 teaches ViT-S/16 VPT-deep 50, 224 px
    python benchmarks/kd_step.py --setting demo     # the offline demo's EfficientNet-Lite0 teaches a small CNN, 64 px

Random weights (timing only). The SemiKD student forwards x, u_w and one strong view
with gradients; FineSSL forwards x and both strong views with gradients and u_w
without; the teacher forwards u_w and the strong view without gradients. So SemiKD
costs FineSSL's step minus the student's no-grad weak forward plus the teacher's
forward: the teacher adds nothing to the backward pass.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if not __package__:  # run as a file (python benchmarks/kd_step.py): the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETTINGS = {  # name -> (teacher keys, student keys, side, labeled batch, mu)
    "released": ({"backbone": "ViT-B/16", "vpt_deep": True},
                 {"stu_backbone": "timm:vit_small_patch16_224", "stu_vpt_deep": True}, 224, 2, 2),
    "demo": ({"backbone": "efficientnet_lite0", "finetune": True, "input_size": 64},
             {"stu_backbone": "timm:mobilenetv3_small_050", "stu_finetune": True}, 64, 32, 2),
}


def build(setting: str, classes: int, device):
    import torch
    from finessl.algorithms import build_algorithm
    from finessl.algorithms.semikd import Teacher
    from finessl.config import get_cfg_defaults
    from finessl.models import build_model
    from finessl.models.student import student_config

    teacher_keys, student_keys, side, batch, mu = SETTINGS[setting]
    cfg = get_cfg_defaults()
    cfg.pretrained, cfg.stu_pretrained, cfg.DATA.MU_U = "none", "none", mu
    for key, value in {**teacher_keys, **student_keys}.items():
        cfg[key] = value
    names = [f"c{i}" for i in range(classes)]
    torch.manual_seed(0)
    teacher = Teacher(build_model(cfg, names, device, half=False), side, "random", 0.0)
    student_cfg = student_config(cfg)
    models, algorithms = {}, {}
    for name, algorithm in (("semikd", "semikd"), ("finessl", "finessl")):
        cfg_a = student_cfg.clone()
        cfg_a.defrost()
        cfg_a.algorithm = algorithm
        torch.manual_seed(0)
        models[name] = build_model(cfg_a, names, device, half=False).train()
        cfg_k = cfg.clone()
        cfg_k.algorithm = algorithm
        algorithms[name] = build_algorithm(cfg_k if algorithm == "semikd" else cfg_a,
                                           models[name], classes, 1000, device)
    algorithms["semikd"].set_teacher(lambda: teacher)
    images = lambda n: torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,  # noqa: E731
                                     device=device)
    data = {"x": images(batch), "y": torch.randint(classes, (batch,), device=device),
            "u_w": images(mu * batch), "u_s1": images(mu * batch), "u_s2": images(mu * batch),
            "u_idx": torch.arange(mu * batch, device=device),
            "u_true": torch.randint(classes, (mu * batch,), device=device)}
    return teacher, models, algorithms, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="released")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher, models, algorithms, data = build(args.setting, args.classes, device)
    optims = {k: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
              for k, m in models.items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(name):
        loss, _ = algorithms[name].train_step(data)
        optims[name].zero_grad(set_to_none=True)
        loss.backward()
        optims[name].step()

    def teacher_forward():
        teacher(torch.cat([data["u_w"], data["u_s1"]]))

    jobs = {"semikd": lambda: step("semikd"), "finessl": lambda: step("finessl"),
            "teacher forward": teacher_forward}
    for job in jobs.values():  # warm-up
        job()
    seconds = {k: 0.0 for k in jobs}
    for _ in range(args.steps):
        for name, job in jobs.items():
            sync()
            start = time.perf_counter()
            job()
            sync()
            seconds[name] += (time.perf_counter() - start) / args.steps
    teacher_keys, student_keys, side, batch, mu = SETTINGS[args.setting]
    print(f"SemiKD vs FineSSL step, {args.setting}: teacher {teacher_keys['backbone']}, student "
          f"{student_keys['stu_backbone']}, {side} px, B = {batch}, mu = {mu}, {device.type}, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps each, interleaved")
    print("| step | s/step |")
    print("|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} |")
    print(f"| semikd / finessl | {seconds['semikd'] / seconds['finessl']:.2f}x |")


if __name__ == "__main__":
    main()
