"""The command line of ``main.py report`` (light: no plotting imports until it runs;
``main.py`` lists it in its table of subcommands)."""
from __future__ import annotations

HELP = "report.html and PNG figures from run folders or a sweep"
# the keys of finessl.report.sweep.METRICS (not imported here: it imports the plotting)
# finessl/report/runs.py METRICS' names, written out: ``report --help`` imports no torch
METRIC_CHOICES = ("last", "best_val", "best_test", "best", "balanced", "head", "medium", "tail")


def add_arguments(parser) -> None:
    """Describe ``main.py report`` on ``parser`` (an ``argparse.ArgumentParser``)."""
    parser.description = (
        "Write report.html, with every figure also as a PNG, from FineSSL run folders: for "
        "one run its learning curves, per-class learning pace, pseudo-label confidence "
        "histograms (main and aux head), reliability diagrams, per-class accuracy, "
        "confusion matrix, config and split hash; for several runs (or a folder holding "
        "runs at any depth, a sweep) also the method-by-setting table of mean ± std over "
        "seeds with its bar chart and the paper's number where the config declares one, "
        "and the learning curves overlaid. A run in progress is reported as far as it has "
        "got.")
    parser.epilog = "example:\n  python main.py report out/fashion_mnist_bench --out report/\n"
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a run folder, or a folder of runs (a sweep)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where report.html and figures/ go (default: RUN_DIR/report "
                             "for one folder, ./report for several)")
    parser.add_argument("--epochs", nargs="+", type=int, default=None, metavar="E",
                        help="epochs whose confidence histograms are drawn (default: the "
                             "first, the middle and the last)")
    parser.add_argument("--metric", choices=METRIC_CHOICES, default="last",
                        help="what the sweep table shows: top-1 of the last epoch (default), "
                             "of the best validation epoch (DATA.NUM_VAL), or of the best test "
                             "epoch (an oracle; 'best' is its older name); or the last epoch's "
                             "balanced accuracy or accuracy over the head / medium / tail "
                             "classes (long-tailed)")


def run(args) -> int:
    """Build the report (the plotting imports happen here) and print where it is."""
    from finessl.report.page import build
    print(build(args.run_dirs, args.out, args.epochs, args.metric))
    return 0


SELECT_HELP = "choose run and epoch by validation, label-free signals or the test oracle"


def add_select_arguments(parser) -> None:
    """Describe ``main.py select`` (finessl/report/select.py)."""
    parser.description = (
        "Choose the run and epoch of RUN_DIR... (run folders or sweep folders) by each "
        "rule: validation top-1 (DATA.NUM_VAL), each label-free signal, their rank "
        "aggregate, and the test oracle (for reference only). Prints each rule's pick, its "
        "test top-1 and its gap to the oracle, and for each SSL run with a supervised twin "
        "(same seed and split) whether the unlabeled data helped; writes selection.md and "
        "selection.json to --out (docs/selection.md).")
    parser.epilog = "example:\n  python main.py select out/cifar100_N4 --out report/\n"
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders, or folders holding runs at any depth")
    parser.add_argument("--out", default=None, metavar="FOLDER",
                        help="where selection.md and selection.json go (default: "
                             "RUN_DIR/report of a single folder, else ./report)")


def run_select(args) -> int:
    from finessl.report.select import run as select
    return select(args)
