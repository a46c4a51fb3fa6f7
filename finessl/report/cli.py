"""The command line of ``main.py report`` (light: no plotting imports until it runs;
``main.py`` lists it in its table of subcommands)."""
from __future__ import annotations

HELP = "report.html and PNG figures from run folders or a sweep"


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
    parser.add_argument("--metric", choices=("last", "best", "balanced", "head", "medium",
                                             "tail"), default="last",
                        help="what the sweep table shows: the last epoch's top-1 (default), "
                             "the best epoch's, or the last epoch's balanced accuracy or "
                             "accuracy over the head / medium / tail classes (long-tailed)")


def run(args) -> int:
    """Build the report (the plotting imports happen here) and print where it is."""
    from finessl.report.page import build
    print(build(args.run_dirs, args.out, args.epochs, args.metric))
    return 0
