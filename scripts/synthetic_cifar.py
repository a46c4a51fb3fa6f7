#!/usr/bin/env python
"""Write a generated CIFAR-10 (or CIFAR-100) in the real on-disk format, for the offline
ViT demo (configs/demo/vit_tiny.yaml) and for trying any setting without the real data:

    python scripts/synthetic_cifar.py datasets/synthetic-cifar10
    python scripts/synthetic_cifar.py datasets/synthetic-cifar100 --kind cifar100

What the images are: finessl/data/synthetic.py.
"""
import importlib.util
import os
import sys

# The generator needs numpy alone: loaded from its file, without the package around it
# (importing finessl.data imports torch: seconds before the first image).
SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "finessl", "data", "synthetic.py")
spec = importlib.util.spec_from_file_location("finessl_synthetic", SOURCE)
synthetic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(synthetic)

if __name__ == "__main__":
    sys.exit(synthetic.main())
