"""FineSSL: semi-supervised fine-tuning of CLIP (Gan & Wei, ICML 2024).

    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True
    python main.py --cfg configs/peft/cifar100_N4.yaml vpt_deep True --dry-run
"""
from __future__ import annotations

import argparse
import sys

from finessl.config import load_config
from finessl.errors import UserError
from finessl.logs import setup_logging


def parse_args(argv):
    parser = argparse.ArgumentParser(description="FineSSL training and evaluation")
    parser.add_argument("--cfg", "--config-file", dest="cfg", default=None,
                        help="YAML config (keys of finessl/config.py)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config, print it merged, and exit")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides as KEY VALUE pairs, e.g. vpt_deep True")
    args, extra = parser.parse_known_args(argv)  # --dry-run may come after the pairs
    args.opts = args.opts + extra
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        cfg = load_config(args.cfg, args.opts)
        if args.dry_run:
            print(cfg.dump(), end="")
            return 0
        from finessl.engine import run  # heavy imports only when training
        if cfg.eval_only:
            run.evaluate(cfg)
        else:
            run.train(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
