#!/usr/bin/env python3
"""Small helpers of run_gpu_bench.sh (tests/bench/gpu/README.md). Needs numpy.

  gpu_tools.py make-cifar DIR [--train N] [--test N] [--seed S]
      writes DIR/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) as the
      real CIFAR-10 pickles are laid out (dicts of `data` N x 3072 uint8, R plane then G then
      B, `labels` a list of ints, `batch_label`, `filenames`), of learnable synthetic
      images: each class is a smooth colour pattern, each image that pattern shifted by a
      few pixels, at a random contrast, plus noise. A network's loss falls on it within an
      epoch, and the loader decodes exactly as much as for the real dataset.
  gpu_tools.py metrics RUN_DIR/metrics.csv [--json OUT]
      summarises a `trainpipe train` run from its CSV log: images/s and data-wait fraction
      per logged interval, steady state (every interval but the first, which holds the
      start-up) and overall (weighted by the interval's images), the loss of the first and
      last intervals, and the validation errors. Exit 1 when the file holds no train rows.

Weights are compared by tests/integration/compare_weights.py.
"""

import argparse
import csv
import json
import os
import pickle
import statistics
import sys

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


# --------------------------------------------------------------------------- make-cifar

def synthetic_images(rng, labels, templates):
    """uint8 N x 3072 rows (planar RGB) of class templates, shifted, scaled and noised."""
    n = len(labels)
    out = np.empty((n, 3, 32, 32), dtype=np.uint8)
    chunk = 5000  # bounds the float32 temporaries to ~60 MB
    for s in range(0, n, chunk):
        lab = labels[s:s + chunk]
        m = len(lab)
        img = templates[lab]                                    # m x 3 x 40 x 40
        dy = rng.integers(0, 9, m)
        dx = rng.integers(0, 9, m)
        rows = dy[:, None] + np.arange(32)[None, :]              # m x 32
        cols = dx[:, None] + np.arange(32)[None, :]
        img = img[np.arange(m)[:, None, None, None], np.arange(3)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
        contrast = rng.uniform(0.5, 1.0, (m, 1, 1, 1)).astype(np.float32)
        noise = rng.normal(0.0, 30.0, img.shape).astype(np.float32)
        out[s:s + m] = np.clip(128.0 + 90.0 * contrast * img + noise, 0, 255).astype(np.uint8)
    return out.reshape(n, 3072)


def make_cifar(args):
    rng = np.random.default_rng(args.seed)
    # Smooth 40x40 patterns (a 5x5 random grid upsampled by 8, then a 3x3 box blur), one per
    # class, in [-1, 1]; crops of 32x32 at offsets 0..8 keep a class recognisable.
    coarse = rng.uniform(-1.0, 1.0, (10, 3, 5, 5)).astype(np.float32)
    fine = coarse.repeat(8, axis=2).repeat(8, axis=3)
    pad = np.pad(fine, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    templates = sum(pad[:, :, i:i + 40, j:j + 40] for i in range(3) for j in range(3)) / 9.0
    out = os.path.join(args.dir, "cifar-10-batches-py")
    os.makedirs(out, exist_ok=True)
    per_batch = args.train // 5
    if per_batch * 5 != args.train:
        sys.exit("--train must be a multiple of 5")

    def write(name, n, label):
        labels = rng.integers(0, 10, n)
        batch = {"batch_label": label, "labels": [int(v) for v in labels],
                 "data": synthetic_images(rng, labels, templates),
                 "filenames": ["synthetic_%s_%05d.png" % (name, i) for i in range(n)]}
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)   # the protocol of the distributed files

    for b in range(1, 6):
        write("data_batch_%d" % b, per_batch, "training batch %d of 5" % b)
    write("test_batch", args.test, "testing batch 1 of 1")
    with open(os.path.join(out, "batches.meta"), "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES,
                     "num_vis": 3072}, f, protocol=2)
    print("%s: %d training and %d test images (synthetic, numpy %s)"
          % (out, args.train, args.test, np.__version__))


# --------------------------------------------------------------------------- metrics

def num(row, key):
    v = row.get(key, "")
    return float(v) if v not in ("", None) else None


def metrics(args):
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r.get("phase") == "train" and num(r, "images_per_sec")]
    val = [r for r in rows if r.get("phase") in ("val", "validation") and num(r, "val_error") is not None]
    if not train:
        print("%s: no train rows with images_per_sec" % args.csv)
        return 1
    # Intervals: the steps between two train rows; the first row's interval starts at 0.
    intervals, prev = [], 0
    for r in train:
        step = int(float(r["step"]))
        intervals.append({"step": step, "steps": step - prev,
                          "images_per_s": num(r, "images_per_sec"),
                          "data_wait": num(r, "data_wait_fraction"),
                          "loss": num(r, "train_loss"), "error": num(r, "train_error")})
        prev = step
    steady = intervals[1:] or intervals

    def weighted(items, key):
        # time-weighted mean of a fraction: each interval's time is steps / rate
        t = [(i["steps"] / i["images_per_s"], i[key]) for i in items if i[key] is not None]
        total = sum(w for w, _ in t)
        return sum(w * v for w, v in t) / total if total else None

    def rate(items):
        # images/s over the intervals together: an interval's time is steps x batch / rate,
        # so total images / total time = sum(steps) / sum(steps / rate) (the batch cancels)
        time_ = sum(i["steps"] / i["images_per_s"] for i in items)
        return sum(i["steps"] for i in items) / time_ if time_ else None

    res = {
        "intervals": len(intervals), "steps": intervals[-1]["step"],
        "steady_images_per_s": rate(steady),
        "median_images_per_s": statistics.median(i["images_per_s"] for i in steady),
        "steady_data_wait": weighted(steady, "data_wait"),
        "overall_data_wait": weighted(intervals, "data_wait"),
        "max_data_wait": max((i["data_wait"] for i in steady if i["data_wait"] is not None),
                             default=None),
        "first_loss": intervals[0]["loss"], "last_loss": intervals[-1]["loss"],
        "val_errors": [num(r, "val_error") for r in val],
    }
    print("%-8s %8s %12s %10s %10s" % ("step", "steps", "images/s", "data wait", "loss"))
    for i in intervals:
        print("%-8d %8d %12.0f %9.2f%% %10.4f" % (i["step"], i["steps"], i["images_per_s"],
                                                 100 * (i["data_wait"] or 0), i["loss"] or 0))
    print("steady state (intervals 2..%d): %.0f images/s (median interval %.0f), data wait "
          "%.2f%% of the time (worst interval %.2f%%); overall data wait %.2f%%"
          % (len(intervals), res["steady_images_per_s"], res["median_images_per_s"],
             100 * (res["steady_data_wait"] or 0),
             100 * (res["max_data_wait"] or 0), 100 * (res["overall_data_wait"] or 0)))
    print("train loss: first interval %.4f, last %.4f; validation error per evaluation: %s"
          % (res["first_loss"] or 0, res["last_loss"] or 0,
             ", ".join("%.4f" % v for v in res["val_errors"]) or "none"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f)
            f.write("\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-cifar")
    m.add_argument("dir")
    m.add_argument("--train", type=int, default=50000)
    m.add_argument("--test", type=int, default=10000)
    m.add_argument("--seed", type=int, default=7)
    s = sub.add_parser("metrics")
    s.add_argument("csv")
    s.add_argument("--json")
    args = ap.parse_args()
    if args.cmd == "make-cifar":
        make_cifar(args)
        return 0
    return metrics(args)


if __name__ == "__main__":
    sys.exit(main())
