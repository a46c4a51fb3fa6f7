#!/usr/bin/env python
"""Write a generated CIFAR-10 (or CIFAR-100) in the real on-disk format, for the offline
ViT demo (configs/demo/vit_tiny.yaml) and for trying any setting without the real data:

    python scripts/synthetic_cifar.py datasets/synthetic-cifar10
    python scripts/synthetic_cifar.py datasets/synthetic-cifar100 --kind cifar100

What the images are: finessl/data/synthetic.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from finessl.data.synthetic import main  # noqa: E402  (after the repository is on the path)

if __name__ == "__main__":
    sys.exit(main())
