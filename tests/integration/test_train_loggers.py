#!/usr/bin/env python3
"""Checks the TensorBoard and CSV output of a real (small) training run.

usage: test_train_loggers.py RUN_DIR RESUME_STEP   (RESUME_STEP 0: not resumed)

- every event file (test_loggers_check.check_event_files): framing and both CRC32Cs,
  TensorBoard's loader reads the same records, TensorFlow's file names, first record
  brain.Event:2, no tag twice at one step; resumed: a second file per phase whose first
  event after the version is SessionLog START at the resume step;
- the CSV has no (phase, step) twice and the rows after the resume step come from the
  resumed run only (one header, steps increasing per phase);
- every scalar TensorBoard shows equals the CSV's value at that step (as float32), and every
  CSV value is in TensorBoard, except at the resume step, which START hides
  (test_loggers_check.check_scalars_equal_csv);
- the training scalars are the trainer's: loss finite, errors in [0, 1], learning rate as
  the cosine schedule gives, data-wait fraction in [0, 1], images/s positive;
- histograms of parameters and gradients, and images of the input batch, are present.
"""
import csv
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_loggers_check import (COLUMN, HEADER, check_event_files,  # noqa: E402
                                check_scalars_equal_csv, fail, failures)


def read_csv(run_dir):
    path = os.path.join(run_dir, "metrics.csv")
    text = open(path, newline="").read()
    lines = text.splitlines()
    if lines[0] != HEADER:
        fail(f"{path}: header {lines[0]!r}")
    if sum(1 for l in lines if l.startswith("step,")) != 1:
        fail(f"{path}: the header appears more than once")
    cells, last = {}, {}
    for row in csv.DictReader(lines):
        phase, step = row["phase"], int(row["step"])
        if step <= last.get(phase, -1):
            fail(f"{path}: {phase} step {step} after step {last[phase]} (rows not dropped?)")
        last[phase] = step
        for (p, tag), col in COLUMN.items():
            if p != phase or row[col] == "":
                continue
            if (phase, step, col) in cells:
                fail(f"{path}: {col} twice at {phase} step {step}")
            cells[(phase, step, col)] = float(row[col])
    return cells


def check_values(cells, lr0, total, warmup):
    for (phase, step, col), v in cells.items():
        if not math.isfinite(v):
            fail(f"csv: {col} at {phase} step {step} is {v}")
        if col in ("train_error", "val_error", "val_error_top5", "data_wait_fraction") and \
                not 0 <= v <= 1:
            fail(f"csv: {col} = {v} at step {step} outside [0, 1]")
        if col == "images_per_sec" and not v > 0:
            fail(f"csv: images/s {v} at step {step}")
        if col == "learning_rate":
            # schedule "cosine" (final_factor 0) times its linear warm-up from 0.1, at the
            # 0-based position of the step that was logged.
            s = step - 1
            warm = 0.1 + 0.9 * s / warmup if s < warmup else 1.0
            want = lr0 * 0.5 * (1 + math.cos(math.pi * s / total)) * warm
            if abs(v - want) > 1e-6 * max(1, abs(want)):
                fail(f"csv: learning rate {v} at step {step}, schedule gives {want}")


def check_phase(run_dir, phase, resume, cells):
    d = os.path.join(run_dir, "tensorboard", phase)
    check_event_files(d, phase, resume)
    acc, n = check_scalars_equal_csv(d, phase, resume, cells)
    if n == 0:
        fail(f"{d}: no scalars")
    if phase == "train":
        tags = acc.Tags()
        if not any(t.startswith("parameters/") for t in tags["histograms"]) or \
                not any(t.startswith("gradients/") for t in tags["histograms"]):
            fail(f"{d}: parameter and gradient histograms missing ({tags['histograms'][:3]})")
        if not tags["images"]:
            fail(f"{d}: no input images")
        else:
            print(f"train: {len(tags['histograms'])} histogram tags, image tags {tags['images']}")


def main():
    run_dir, resume = sys.argv[1], int(sys.argv[2])
    lr0, total, warmup = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    cells = read_csv(run_dir)
    check_values(cells, lr0, total, warmup)
    for phase in ("train", "validation"):
        check_phase(run_dir, phase, resume, cells)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
