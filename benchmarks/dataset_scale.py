"""Building ImageNet-sized datasets and splits: time and peak memory of
``build_data`` (DATA.NAME semi_ImageNet) on a generated tree of tiny JPEG files, and
their extrapolation to ImageNet's 1,281,167 training images. Targets: under 60 s and
under 2 GiB at 1.28 M files.

    python benchmarks/dataset_scale.py                    # 200,000 files in 1000 classes
    python benchmarks/dataset_scale.py --files 1281167    # the real count (~5 GB of inodes)
    python benchmarks/dataset_scale.py --root /data/tree --keep   # reuse a generated tree

The tree is ImageNet's layout: ``train/<wnid>/<wnid>_<n>.JPEG``, ``val/<wnid>/`` with
as many images per train image as ImageNet has (50,000 / 1,281,167), and SimCLR's
``1percent.txt`` (1 % of the names). Every file is one tiny valid JPEG.

Each measurement runs in a fresh process whose peak RSS is reset after the imports
(reported apart), so the peak is that of the whole ``build_data``: listing, list-file
lookup, test set, split and ``split.json``. Three builds: no index cache, the cache
written, the cache read. The tree was just written, so its directory entries are in
the page cache; a first listing on a cold network filesystem is slower, which is what
the cache is for. Time and memory grow linearly with the file count (the sorts are per
class, about a thousand names each), so the extrapolation multiplies the build's share
by 1.28 M / N.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000
TARGET_S, TARGET_GIB = 60.0, 2.0


def tiny_jpeg() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 80, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tree(root: str, files: int, classes: int) -> float:
    """The tree described in the module docstring; seconds taken."""
    start, data = time.perf_counter(), tiny_jpeg()
    wnids = [f"n{1440764 + 7919 * k:08d}" for k in range(classes)]
    val = max(classes, round(files * IMAGENET_VAL / IMAGENET_TRAIN))
    listed = []
    for k, wnid in enumerate(wnids):
        share = files // classes + (k < files % classes)
        for split, names in (("train", [f"{wnid}_{n}.JPEG" for n in range(share)]),
                             ("val", [f"ILSVRC2012_val_{k:04d}{n:04d}.JPEG"
                                      for n in range(val // classes + (k < val % classes))])):
            folder = os.path.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            for name in names:
                fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.write(fd, data)
                os.close(fd)
            if split == "train":
                listed += names[:max(1, round(share / 100))]
    with open(os.path.join(root, "1percent.txt"), "w") as f:
        f.write("".join(f"{name}\n" for name in listed))
    return time.perf_counter() - start


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM, Linux >= 4.0: ``clear_refs`` 5), so the
    imports' own peak does not hide the build's; the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    return _status_bytes("VmHWM")


def measure(root: str, cache: str, out: str) -> dict:
    """One build in this process: the JSON record the parent prints."""
    if not __package__:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from finessl.data.loaders import build_data
    from finessl.config_load import load_config

    cfg = load_config(None, ["DATA.NAME", "semi_ImageNet", "DATA.DATAPATH", root,
                             "DATA.DOWNLOAD", "False", "DATA.MU_U", "2", "DATA.BATCH_SIZE", "16",
                             "IMAGENET.LABEL_FILE", "1percent.txt",
                             "IMAGENET.INDEX_CACHE", cache])
    base = reset_peak_rss()
    start = time.perf_counter()
    bundle = build_data(cfg, 224, out)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "base_rss": base, "peak_rss": peak_rss_bytes(),
            "train": len(bundle.unlabeled), "labeled": len(bundle.labeled),
            "test": len(bundle.test), "classes": bundle.num_classes}


def run_child(root: str, cache: str, out: str) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", root,
                           "--cache", cache, "--out", out], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"measurement failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(name: str, r: dict) -> str:
    scale = IMAGENET_TRAIN / r["train"]
    grown = r["peak_rss"] - r["base_rss"]
    t_full = r["seconds"] * scale
    rss_full = r["base_rss"] + grown * scale
    return (f"{name:<22} {r['seconds']:7.2f} s  {grown / 2**20:7.0f} MiB over "
            f"{r['base_rss'] / 2**20:.0f} MiB   -> 1.28 M: {t_full:6.1f} s "
            f"({t_full / TARGET_S:.2f} of {TARGET_S:.0f} s), peak {rss_full / 2**30:.2f} GiB "
            f"({rss_full / 2**30 / TARGET_GIB:.2f} of {TARGET_GIB:.0f} GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000, help="train images (>= 200,000)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--root", default="", help="tree folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep (or reuse) the tree at --root")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.cache, args.out)))
        return
    root = args.root or tempfile.mkdtemp(prefix="finessl-scale-")
    work = tempfile.mkdtemp(prefix="finessl-scale-run-")
    try:
        if os.path.isfile(os.path.join(root, "1percent.txt")) and args.keep:
            print(f"reusing the tree at {root}")
        else:
            seconds = write_tree(root, args.files, args.classes)
            print(f"wrote {args.files} train files in {args.classes} classes to {root} "
                  f"in {seconds:.1f} s")
        cache = os.path.join(work, "cache")
        runs = [("no cache", run_child(root, "", os.path.join(work, "a"))),
                ("cache written", run_child(root, cache, os.path.join(work, "b"))),
                ("cache read", run_child(root, cache, os.path.join(work, "c")))]
        first = runs[0][1]
        print(f"built: {first['train']} train (all unlabeled), {first['labeled']} labeled, "
              f"{first['test']} test images, {first['classes']} classes")
        for name, record in runs:
            print(report(name, record))
        print(f"cache read / no cache: {runs[2][1]['seconds'] / first['seconds']:.2f} of the time")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
