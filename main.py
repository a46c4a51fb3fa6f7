"""FineSSL: semi-supervised fine-tuning of CLIP (Gan & Wei, ICML 2024).

    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True
    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True --dry-run
    python main.py predict --model-dir out/RUN --images photos/ --output predictions.csv
    python main.py convert-checkpoint out/RUN --trust   # a checkpoint of an older FineSSL
    python main.py restore-checkpoint out/RUN           # checkpoint_prev.pt becomes the last
    python main.py report out/RUN [out/RUN2 ...] --out report/   # report.html + PNG figures

Exit codes (docs/running.md#exit-codes): 0 done, 2 bad input (one line on stderr),
3 training diverged, 130 Ctrl-C, 143 / 138 stopped by SIGTERM / SIGUSR1 (a
preemption: the checkpoint of the step reached is written, 'resume' continues).
"""
from __future__ import annotations

import argparse
import sys

from finessl.engine import signals
from finessl.plugins import load_config
from finessl.errors import UserError
from finessl.logs import setup_logging


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="FineSSL training and evaluation",
        epilog="To label a folder of images with a trained run: python main.py predict "
               "--help; to convert a checkpoint of an older FineSSL: python main.py "
               "convert-checkpoint --help; to fall back on checkpoint_prev.pt: python main.py "
               "restore-checkpoint --help")
    parser.add_argument("--cfg", "--config-file", dest="cfg", default=None,
                        help="YAML config (keys of finessl/config.py)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, device, run folder, data files and weights as a "
                             "real run does, print the merged config, and exit")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs, e.g. vpt_deep True")
    args, extra = parser.parse_known_args(argv)  # --dry-run may come after the pairs
    args.opts = args.opts + extra
    return args


def parse_predict_args(argv):
    parser = argparse.ArgumentParser(
        prog="main.py predict",
        description="Label every image below --images (any depth; jpg jpeg png bmp gif webp "
                    "tif tiff) with the main head of the trained run in --model-dir, and "
                    "write a CSV with columns path (relative to --images), class, confidence "
                    "(softmax probability of that class). Unreadable files are logged by path "
                    "and skipped. The run is rebuilt from RUN_DIR/config.yaml and "
                    "RUN_DIR/checkpoint_last.pt; the training data is not needed unless the "
                    "checkpoint predates recorded class names (then they are read from "
                    "DATA.DATAPATH).",
        epilog="example: python main.py predict --model-dir out/CIFAR100/N4/seed1 "
               "--images photos/ --output photos.csv num_workers 4 gpu 0")
    parser.add_argument("--model-dir", required=True, metavar="RUN_DIR",
                        help="run folder holding config.yaml and checkpoint_last.pt")
    parser.add_argument("--images", required=True, metavar="FOLDER",
                        help="folder of images to label")
    parser.add_argument("--output", default="predictions.csv", metavar="FILE",
                        help="CSV to write (default: predictions.csv)")
    parser.add_argument("--cfg", "--config-file", dest="cfg", default=None,
                        help="config to use instead of RUN_DIR/config.yaml")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="overrides of the run's config, e.g. gpu 0, num_workers 4")
    return parser.parse_intermixed_args(argv)


def parse_repair_args(command: str, argv):
    parser = argparse.ArgumentParser(prog=f"main.py {command}", description={
        "convert-checkpoint":
            "Rewrite the checkpoints in RUN_DIR that an older FineSSL wrote (numpy arrays in "
            "the RNG state) in the current format, which loads as plain data. Reading the "
            "old format runs any code a tampered file holds, so it needs --trust; each "
            "original is kept as <file>.bak.",
        "restore-checkpoint":
            "Make RUN_DIR/checkpoint_prev.pt (the checkpoint before the last one) the last "
            "checkpoint, keeping a damaged checkpoint_last.pt as checkpoint_last.pt.damaged; "
            "then resume as usual."}[command])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    if command == "convert-checkpoint":
        parser.add_argument("--trust", action="store_true",
                            help="the files are yours: load them without the weights-only "
                                 "restriction")
    return parser.parse_args(argv)


REPAIRS = ("convert-checkpoint", "restore-checkpoint")
REPORT = "report"  # its command line: finessl/report/cli.py


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv[:1] and argv[0] in ("predict", REPORT) + REPAIRS else None
    if command == "predict":
        args = parse_predict_args(argv[1:])
    elif command == REPORT:
        from finessl.report.cli import parse_args as parse_report_args
        args = parse_report_args(argv[1:])
    elif command:
        args = parse_repair_args(command, argv[1:])
    else:
        args = parse_args(argv)
    setup_logging()
    with signals.handling():  # SIGTERM / SIGUSR1: stop cleanly (finessl/engine/signals.py)
        return _run(command, args)


def _run(command, args) -> int:
    try:
        if command == "predict":
            from finessl.engine.predict import predict  # heavy imports only when needed
            predict(args.model_dir, args.images, args.output, args.cfg, args.opts)
            return 0
        if command == REPORT:
            from finessl.report.page import build
            print(build(args.run_dirs, args.out, args.epochs, args.metric))
            return 0
        if command:
            from finessl.engine import repair
            if command == "convert-checkpoint":
                repair.convert_checkpoints(args.run_dir, args.trust)
            else:
                repair.restore_previous(args.run_dir)
            return 0
        cfg = load_config(args.cfg, args.opts)
        if args.dry_run:  # every check a real run's setup makes (finessl/engine/preflight.py)
            from finessl.engine import preflight
            preflight.rehearse(cfg, preflight.check(cfg))
            print(cfg.dump(), end="")
            return 0
        from finessl.engine import run  # heavy imports only when training
        if cfg.eval_only:
            run.evaluate(cfg)
        else:
            run.train(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # 3: training diverged (finessl/engine/guard.py)
    except signals.Preempted as e:
        print(f"{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
