#!/usr/bin/env python3
"""Checks a run directory written by `test_loggers train` with TensorBoard's own reader.

usage: test_loggers_check.py RUN_DIR RESUME_STEP   (RESUME_STEP 0: a fresh run)

- every record of every event file: framing and both CRC32Cs, with a CRC32C written here
  (not TensorBoard's), and TensorBoard's loader reads the same number of records;
- first record file_version "brain.Event:2"; a resumed run's new file: SessionLog START at
  the resume step; file names as TensorFlow makes them;
- no tag twice at one step (following TensorBoard's purge rule across files);
- every scalar EventAccumulator shows equals the CSV's value at that step (float32), and
  every CSV value is in TensorBoard; the CSV follows the driver's formulas (so the rows the
  resumed run replaced were dropped);
- histograms (each bucket holds exactly the values in its range) and PNG images (decoded
  here with zlib, compared pixel by pixel).
Exit status 0 pass, 1 fail.
"""
import csv
import math
import os
import re
import struct
import sys
import zlib

import numpy as np
from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


# ---------------------------------------------------------------- CRC32C, written here
def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283
assert crc32c(bytes(32)) == 0x8A9136AA
assert masked(crc32c(b"\x1a\x11CRC test, one two")) == 0x5794D08A


def read_records(path):
    data = open(path, "rb").read()
    records, off = [], 0
    while off < len(data):
        if off + 12 > len(data):
            fail(f"{path}: truncated record header at {off}")
            break
        (length,) = struct.unpack_from("<Q", data, off)
        (lcrc,) = struct.unpack_from("<I", data, off + 8)
        if masked(crc32c(data[off:off + 8])) != lcrc:
            fail(f"{path}: bad length CRC at {off}")
            break
        end = off + 12 + length
        if end + 4 > len(data):
            fail(f"{path}: truncated record at {off}")
            break
        payload = data[off + 12:end]
        (dcrc,) = struct.unpack_from("<I", data, end)
        if masked(crc32c(payload)) != dcrc:
            fail(f"{path}: bad data CRC at {off}")
        records.append(payload)
        off = end + 4
    return records


# ---------------------------------------------------------------- the driver's formulas
def f_loss(s, a): return 2.0 / (1.0 + s / 100.0) + 0.25 * a
def f_error(s, a): return 0.9 / (1.0 + s / 200.0) + 0.05 * a
def f_lr(s): return 0.1 if s < 300 else 0.01 if s < 700 else 0.001
def f_ips(s): return 1000.0 + s % 7
def f_wait(s): return 0.01 * (s % 5)


def expected_row(phase, step, attempt):
    if phase == "train":
        return {"train_loss": f_loss(step, attempt), "train_error": f_error(step, attempt),
                "learning_rate": f_lr(step), "images_per_sec": f_ips(step),
                "data_wait_fraction": f_wait(step)}
    return {"val_loss": f_loss(step, attempt) + 0.1, "val_error": f_error(step, attempt) + 0.02,
            "val_error_top5": f_error(step, attempt) / 3.0}


COLUMN = {("train", "loss"): "train_loss", ("train", "error_top1"): "train_error",
          ("train", "learning_rate"): "learning_rate",
          ("train", "images_per_sec"): "images_per_sec",
          ("train", "data_wait_fraction"): "data_wait_fraction",
          ("validation", "loss"): "val_loss", ("validation", "error_top1"): "val_error",
          ("validation", "error_top5"): "val_error_top5"}
HEADER = ("step,epoch,wall_time,phase,train_loss,train_error,val_loss,val_error,val_error_top5,"
          "learning_rate,images_per_sec,data_wait_fraction")
STEPS, VAL_EVERY, TRAIN_EVERY, HIST_EVERY, IMAGE_EVERY = 1000, 100, 10, 200, 250


def close32(a, b):
    return abs(np.float32(a) - np.float32(b)) <= 2.5e-7 * max(1.0, abs(a))


def check_csv(run_dir, resume):
    path = os.path.join(run_dir, "metrics.csv")
    text = open(path, newline="").read()
    if text.splitlines()[0] != HEADER:
        fail(f"{path}: header {text.splitlines()[0]!r}")
    cells = {}
    max_diff = 0.0
    for row in csv.DictReader(text.splitlines()):
        phase, step = row["phase"], int(row["step"])
        attempt = 1 if resume and step > resume else 0
        for col, want in expected_row(phase, step, attempt).items():
            key = (phase, step, col)
            if key in cells:
                fail(f"{path}: {col} twice at {phase} step {step}")
            if row[col] == "":
                fail(f"{path}: {col} empty at {phase} step {step}")
                continue
            got = float(row[col])
            cells[key] = got
            max_diff = max(max_diff, abs(got - want))
        for col in row:
            if col not in ("step", "epoch", "wall_time", "phase") and \
                    col not in expected_row(phase, step, 0) and row[col] != "":
                fail(f"{path}: {col} should be empty in a {phase} row (step {step})")
    n_train = len({k[1] for k in cells if k[0] == "train"})
    n_val = len({k[1] for k in cells if k[0] == "validation"})
    if n_train != STEPS // TRAIN_EVERY or n_val != STEPS // VAL_EVERY:
        fail(f"{path}: {n_train} train and {n_val} validation steps, expected "
             f"{STEPS // TRAIN_EVERY} and {STEPS // VAL_EVERY}")
    print(f"csv: {len(cells)} cells, max |csv - formula| = {max_diff:.3g}")
    if max_diff > 1e-6:
        fail(f"{path}: values differ from the driver's by up to {max_diff}")
    return cells


def decode_png(data):
    """A minimal PNG reader for 8-bit gray/RGB/RGBA, filter 0..4 (checked with zlib.crc32)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    off, idat, ihdr = 8, b"", None
    while off < len(data):
        (length,) = struct.unpack_from(">I", data, off)
        ctype = data[off + 4:off + 8]
        body = data[off + 8:off + 8 + length]
        (crc,) = struct.unpack_from(">I", data, off + 8 + length)
        assert zlib.crc32(ctype + body) == crc, f"PNG chunk {ctype} CRC"
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
        off += 12 + length
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0
    ch = {0: 1, 2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = w * ch
    assert len(raw) == h * (stride + 1), "PNG data size"
    out = np.zeros((h, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1)
        cur = line.astype(np.int64)
        if ftype == 0:
            pass
        elif ftype == 2:
            cur = (cur + prev) & 255
        else:
            # Sub, Average, Paeth depend on the left neighbour: byte by byte.
            cur = cur.copy()
            for x in range(stride):
                a = cur[x - ch] if x >= ch else 0
                b = prev[x]
                c = prev[x - ch] if x >= ch else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[x] = (cur[x] + pred) & 255
        out[y] = cur
        prev = cur
    return w, h, ch, out.reshape(h, w, ch)


def check_event_files(d, phase, resume):
    """Framing, CRCs, TensorFlow's file names, the first record, SessionLog START in a
    resumed run's new file, and no tag twice at one step (after TensorBoard's purge)."""
    files = sorted(f for f in os.listdir(d) if "tfevents" in f)
    want_files = 2 if resume else 1
    if len(files) != want_files:
        fail(f"{d}: {len(files)} event files, expected {want_files}")
    for f in files:
        if not re.fullmatch(r"events\.out\.tfevents\.\d{10}\.[^/]+\.\d+\.\d+", f):
            fail(f"{d}/{f}: unexpected file name")

    # Raw records: framing, CRCs, first record, SessionLog, duplicates.
    seen = {}  # tag -> set of steps, with TensorBoard's purge applied at SessionLog START
    n_records = 0
    for i, f in enumerate(files):
        path = os.path.join(d, f)
        records = read_records(path)
        n_records += len(records)
        loaded = list(event_file_loader.LegacyEventFileLoader(path).Load())
        if len(loaded) != len(records):
            fail(f"{path}: TensorBoard's loader read {len(loaded)} records, framing has {len(records)}")
        events = [event_pb2.Event.FromString(r) for r in records]
        if not events or events[0].file_version != "brain.Event:2":
            fail(f"{path}: first record is not file_version brain.Event:2")
        if resume and i == len(files) - 1:
            if len(events) < 2 or events[1].session_log.status != event_pb2.SessionLog.START \
                    or events[1].step != resume:
                fail(f"{path}: no SessionLog START at step {resume} after the file version")
            else:
                print(f"{phase}: {f}: SessionLog START at step {events[1].step}")
        for ev in events:
            if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
                for steps in seen.values():
                    steps.difference_update({s for s in steps if s >= ev.step})
            for v in ev.summary.value:
                steps = seen.setdefault(v.tag, set())
                if ev.step in steps:
                    fail(f"{path}: tag {v.tag} twice at step {ev.step}")
                steps.add(ev.step)
    print(f"{phase}: {len(files)} file(s), {n_records} records, CRCs checked")


def check_scalars_equal_csv(d, phase, resume, cells):
    """Every scalar TensorBoard shows equals the CSV cell at its step, and every CSV cell is
    in TensorBoard (except at the resume step, which SessionLog START hides). Returns the
    accumulator and the number of scalars compared."""
    acc = event_accumulator.EventAccumulator(
        d, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0,
                          event_accumulator.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    want_tags = sorted(t for (p, t) in COLUMN if p == phase)
    if sorted(tags["scalars"]) != want_tags:
        fail(f"{d}: scalar tags {sorted(tags['scalars'])}, expected {want_tags}")
    max_diff, n = 0.0, 0
    for tag in tags["scalars"]:
        col = COLUMN[(phase, tag)]
        shown = {}
        for e in acc.Scalars(tag):
            if e.step in shown:
                fail(f"{d}: TensorBoard shows {tag} twice at step {e.step}")
            shown[e.step] = e.value
            want = cells.get((phase, e.step, col))
            if want is None:
                fail(f"{d}: {tag} at step {e.step} is not in the CSV")
                continue
            max_diff = max(max_diff, abs(float(np.float32(want)) - e.value))
            n += 1
            if not close32(want, e.value):
                fail(f"{d}: {tag} at step {e.step}: TensorBoard {e.value}, CSV {want}")
        for (p, step, c), want in cells.items():
            # SessionLog START at the resume step hides the old run's point at that step.
            if p == phase and c == col and step not in shown and step != resume:
                fail(f"{d}: CSV {c} at step {step} is missing from TensorBoard")
    print(f"{phase}: {n} scalars compared with the CSV, max |diff| = {max_diff:.3g}")
    return acc, n


def check_phase(run_dir, phase, resume, cells):
    d = os.path.join(run_dir, "tensorboard", phase)
    check_event_files(d, phase, resume)
    acc, _ = check_scalars_equal_csv(d, phase, resume, cells)
    tags = acc.Tags()
    if phase != "train":
        return

    # Histograms: the driver's 1000 values (the NaN must be left out).
    want_steps = [s for s in range(HIST_EVERY, STEPS + 1, HIST_EVERY) if s != resume]
    hist = acc.Histograms("weights/conv1") if "weights/conv1" in tags["histograms"] else []
    if [h.step for h in hist] != want_steps:
        fail(f"{d}: histogram steps {[h.step for h in hist]}, expected {want_steps}")
    for h in hist:
        attempt = 1 if resume and h.step > resume else 0
        k = np.arange(1000)
        vals = (0.1 * attempt + ((k % 100) + (k // 100) * 7 % 50 - 75) * 0.01).astype(np.float32)
        vals = vals.astype(np.float64)
        hv = h.histogram_value
        lim, cnt = list(hv.bucket_limit), list(hv.bucket)
        if hv.num != 1000 or hv.min != vals.min() or hv.max != vals.max() or \
                abs(hv.sum - vals.sum()) > 1e-9 or abs(hv.sum_squares - (vals ** 2).sum()) > 1e-9:
            fail(f"{d}: histogram at {h.step}: num/min/max/sum {hv.num} {hv.min} {hv.max} {hv.sum}")
        if sorted(lim) != lim or sum(cnt) != 1000:
            fail(f"{d}: histogram at {h.step}: limits not ascending or counts sum to {sum(cnt)}")
        lower = -math.inf
        for upper, c in zip(lim, cnt):
            inside = int(((vals > lower) & (vals <= upper)).sum())
            if inside != c:
                fail(f"{d}: histogram at {h.step}: bucket ({lower}, {upper}] holds {c}, "
                     f"expected {inside}")
                break
            lower = upper
    print(f"train: {len(hist)} histograms checked")

    # Images: max_images=2 of the driver's 3, tags <tag>/image/<i>.
    want_steps = list(range(IMAGE_EVERY, STEPS + 1, IMAGE_EVERY))
    for i in range(2):
        tag = f"input/image/{i}"
        imgs = acc.Images(tag) if tag in tags["images"] else []
        if [im.step for im in imgs] != want_steps:
            fail(f"{d}: {tag} steps {[im.step for im in imgs]}, expected {want_steps}")
        for im in imgs:
            w, h, ch, px = decode_png(im.encoded_image_string)
            if (w, h, ch) != (12, 8, 3) or (im.width, im.height) != (12, 8):
                fail(f"{d}: {tag} at {im.step}: {w}x{h}x{ch}, expected 12x8x3")
                continue
            y, x, c = np.meshgrid(np.arange(8), np.arange(12), np.arange(3), indexing="ij")
            want = (x * 7 + y * 13 + c * 50 + i * 30 + im.step) & 255
            if not np.array_equal(px, want):
                fail(f"{d}: {tag} at step {im.step}: pixels differ")
    if "input/image/2" in tags["images"]:
        fail(f"{d}: max_images=2 but a third image was written")
    print("train: images decoded and compared")


def main():
    run_dir, resume = sys.argv[1], int(sys.argv[2])
    cells = check_csv(run_dir, resume)
    for phase in ("train", "validation"):
        check_phase(run_dir, phase, resume, cells)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
