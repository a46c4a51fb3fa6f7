"""FineSSL: semi-supervised fine-tuning of CLIP (Gan & Wei, ICML 2024).

    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True
    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True --dry-run
    python main.py resume out/cifar100_N4/finessl/seed1   # continue a run
    python main.py predict --model-dir out/cifar100_N4/finessl/seed1 --images photos/
    python main.py report out/RUN [out/RUN2 ...] --out report/   # report.html + PNG figures
    python main.py select out/SWEEP                     # choose run and epoch without peeking
    python main.py convert-checkpoint out/RUN --trust   # a checkpoint of an older FineSSL
    python main.py restore-checkpoint out/RUN           # checkpoint_prev.pt becomes the last

Without a subcommand, main.py trains (or evaluates, ``eval_only True``); every
subcommand is one row of :data:`SUBCOMMANDS`, and its runner imports what it needs,
so ``--help`` starts in a fraction of a second (no torch, open_clip or timm).

Exit codes (docs/running.md#exit-codes): 0 done, 2 bad input or out of memory (one
line on stderr), 3 training diverged, 130 Ctrl-C, 143 / 138 stopped by SIGTERM /
SIGUSR1 (a preemption: the checkpoint of the step reached is written, 'resume'
continues).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

from finessl.engine import signals  # standard library only
from finessl.errors import UserError, is_out_of_memory, out_of_memory_message
from finessl.logs import console_lines, setup_logging
from finessl.report import cli as report_cli


class _Formatter(argparse.HelpFormatter):
    """A paragraph (one line in the code) is wrapped; a text of several lines (the list of
    subcommands, an example to copy) is printed as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """A wrong command line is one line, as any bad input: ``error: ...``, exit 2."""

    pairs_anywhere = False  # KEY VALUE pairs may sit before, between and after options

    def __init__(self, **kwargs):
        super().__init__(formatter_class=_Formatter, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see python {self.prog} --help)\n")

    def parse(self, argv: list[str]) -> argparse.Namespace:
        if not self.pairs_anywhere:
            return self.parse_intermixed_args(argv)
        # Unknown tokens (a value such as -1e-3 that looks like an option) stay KEY VALUE
        # pairs, in the order given, for the config to judge.
        args, extra = self.parse_known_args(argv)
        args.opts = args.opts + extra
        return args


# ---- training: no subcommand, and resume ---------------------------------------------

def add_training_arguments(parser: Parser) -> None:
    parser.pairs_anywhere = True
    parser.add_argument("--cfg", "--config-file", dest="cfg", default=None, metavar="FILE",
                        help="YAML config (keys of finessl/config.py)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, device, run folder, data files and weights as a "
                             "real run does, print the merged config, and exit")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs, e.g. vpt_deep True")


def train(args) -> int:
    """Train (or ``eval_only True``: evaluate a saved run); ``--dry-run``: check only."""
    from finessl.config_load import load_config  # every built-in plug-in, torch
    cfg = load_config(args.cfg, args.opts)
    from finessl.engine import run
    if args.dry_run:  # every check a real run's setup makes, nothing written
        run.dry_run(cfg)
        print(cfg.dump(), end="")
        return 0
    if cfg.eval_only:
        run.evaluate(cfg)
    else:
        from finessl.report.figures import epoch_images  # matplotlib: a run's figures
        run.train(cfg, epoch_images)
    return 0


def add_resume_arguments(parser: Parser) -> None:
    parser.description = (
        "Continue the run in RUN_DIR from its last checkpoint (the end of the last epoch, or "
        "the step a preemption stopped at), exactly. The run's own RUN_DIR/config.yaml is "
        "the base; --cfg and KEY VALUE pairs go on top, and only runtime keys may differ "
        "(num_workers, gpu, ...; num_epochs N with allow_extend True trains longer). The "
        "same as the pair 'resume RUN_DIR' on a training command line (docs/running.md).")
    parser.epilog = ("example:\n  python main.py resume out/cifar100_N4/finessl/seed1 "
                     "num_workers 4 gpu 0\n")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to continue")
    add_training_arguments(parser)


def resume(args) -> int:
    args.opts = ["resume", args.run_dir, *args.opts]
    return train(args)


# ---- predict ---------------------------------------------------------------------------

def add_predict_arguments(parser: Parser) -> None:
    parser.description = (
        "Label every image below --images (any depth; jpg jpeg png bmp gif webp tif tiff) "
        "with the main head of the trained run in --model-dir, and write a CSV with columns "
        "path (relative to --images), class, confidence (softmax probability of that "
        "class). Unreadable files are logged by path and skipped. The run is rebuilt from "
        "RUN_DIR/config.yaml and RUN_DIR/checkpoint_last.pt; the training data is not "
        "needed unless the checkpoint predates recorded class names (then they are read "
        "from DATA.DATAPATH).")
    parser.epilog = ("example:\n  python main.py predict --model-dir "
                     "out/cifar100_N4/finessl/seed1 --images photos/ --output photos.csv "
                     "num_workers 4 gpu 0\n")
    parser.add_argument("--model-dir", required=True, metavar="RUN_DIR",
                        help="run folder holding config.yaml and checkpoint_last.pt")
    parser.add_argument("--images", required=True, metavar="FOLDER",
                        help="folder of images to label")
    parser.add_argument("--output", default="predictions.csv", metavar="FILE",
                        help="CSV to write (default: predictions.csv)")
    parser.add_argument("--cfg", "--config-file", dest="cfg", default=None, metavar="FILE",
                        help="config to use instead of RUN_DIR/config.yaml")
    parser.add_argument("--metric", choices=("last", "best_val", "best_test"), default="last",
                        help="the epoch whose checkpoint predicts: the last (default) or the "
                             "best validation epoch (checkpoint_best_val.pt, DATA.NUM_VAL); "
                             "best_test is an oracle, whose checkpoint is not kept "
                             "(docs/selection.md)")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="overrides of the run's config, e.g. gpu 0, num_workers 4")


def predict(args) -> int:
    from finessl.engine.predict import predict as label_images
    label_images(args.model_dir, args.images, args.output, args.cfg, args.opts, args.metric)
    return 0


# ---- repairs of a run folder (finessl/engine/repair.py) --------------------------------

def add_convert_arguments(parser: Parser) -> None:
    parser.description = (
        "Rewrite the checkpoints in RUN_DIR that an older FineSSL wrote (numpy arrays in the "
        "RNG state) in the current format, which loads as plain data. Reading the old "
        "format runs any code a tampered file holds, so it needs --trust; each original is "
        "kept as <file>.bak.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--trust", action="store_true",
                        help="the files are yours: load them without the weights-only "
                             "restriction")


def convert_checkpoint(args) -> int:
    from finessl.engine import repair
    repair.convert_checkpoints(args.run_dir, args.trust)
    return 0


def add_restore_arguments(parser: Parser) -> None:
    parser.description = (
        "Make RUN_DIR/checkpoint_prev.pt (the checkpoint before the last one) the last "
        "checkpoint, keeping a damaged checkpoint_last.pt as checkpoint_last.pt.damaged; "
        "then resume as usual.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")


def restore_checkpoint(args) -> int:
    from finessl.engine import repair
    repair.restore_previous(args.run_dir)
    return 0


# ---- the table -------------------------------------------------------------------------

class Subcommand(NamedTuple):
    help: str  # one line, listed by main.py --help
    build: Callable[[Parser], None]  # its arguments, description and example
    run: Callable[[argparse.Namespace], int]  # the exit code; imports what it needs


SUBCOMMANDS = {
    "resume": Subcommand("continue a run from its last checkpoint, with its own config.yaml",
                         add_resume_arguments, resume),
    "predict": Subcommand("label a folder of images with a trained run (a CSV)",
                          add_predict_arguments, predict),
    "report": Subcommand(report_cli.HELP, report_cli.add_arguments, report_cli.run),
    "select": Subcommand(report_cli.SELECT_HELP, report_cli.add_select_arguments,
                         report_cli.run_select),
    "convert-checkpoint": Subcommand("rewrite an older FineSSL's checkpoints in the current "
                                     "format (--trust)", add_convert_arguments,
                                     convert_checkpoint),
    "restore-checkpoint": Subcommand("make checkpoint_prev.pt the last checkpoint (a damaged "
                                     "checkpoint_last.pt)", add_restore_arguments,
                                     restore_checkpoint),
}
TRAIN = Subcommand("train, or evaluate a saved run (eval_only True model_dir RUN_DIR)",
                   add_training_arguments, train)


def top_parser() -> Parser:
    rows = "\n".join(f"  {name:<20}{sub.help}" for name, sub in SUBCOMMANDS.items())
    parser = Parser(
        prog="main.py",
        usage="%(prog)s [--cfg FILE] [KEY VALUE ...] [--dry-run]\n"
              "       %(prog)s SUBCOMMAND ... (see %(prog)s SUBCOMMAND --help)",
        description="FineSSL training and evaluation. Without a subcommand: train with the "
                    "config --cfg and KEY VALUE overrides, or evaluate a saved run "
                    "(eval_only True model_dir RUN_DIR).",
        epilog=f"subcommands:\n{rows}\n\nexample:\n  python main.py --cfg "
               f"configs/peft/cifar100_N4.yaml vpt_deep True seed 1\n")
    TRAIN.build(parser)
    return parser


def parse(argv: list[str]) -> tuple[Subcommand, argparse.Namespace]:
    """The row the command line names (training without one) and its arguments."""
    if argv[:1] and argv[0] in SUBCOMMANDS:
        command = SUBCOMMANDS[argv[0]]
        parser = Parser(prog=f"main.py {argv[0]}")
        command.build(parser)
        return command, parser.parse(argv[1:])
    return TRAIN, top_parser().parse(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = parse(argv)
    setup_logging()
    # SIGTERM / SIGUSR1 stop cleanly (finessl/engine/signals.py); the last line printed
    # is a line of its own, after any progress bar (finessl/logs.py).
    with console_lines() as final_line, signals.handling():
        try:
            return command.run(args)
        except UserError as e:
            final_line(f"error: {e}")
            return getattr(e, "exit_code", 2)  # 3: training diverged (finessl/engine/guard.py)
        except signals.Preempted as e:
            final_line(f"{e}")
            return e.exit_code
        except KeyboardInterrupt:
            final_line("interrupted")
            return 130
        except (MemoryError, RuntimeError) as e:  # torch's OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e):
                raise
            final_line(f"error: {out_of_memory_message(e)}")
            return 2


if __name__ == "__main__":
    sys.exit(main())
