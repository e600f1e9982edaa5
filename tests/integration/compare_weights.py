#!/usr/bin/env python3
"""Compares two safetensors files of the same model (trainpipe export output).

  compare_weights.py A.safetensors B.safetensors [--limit L] [--skip TEXT]... [--exact]

Prints one line: the model-wide relative difference max |a - b| / max |b| over every tensor,
the limit, whether the files are bit-identical, and the tensor that differs most on its own
scale. Exits 1 when the difference is above the limit (default 1e-5) or the files hold
different tensors (after leaving out those whose name contains a --skip TEXT), or, with
--exact, when they are not bit-identical; 0 otherwise. The model-wide scale is deliberate:
a bias that starts at 0 moves by rounding alone far more, relative to itself, than the
model does (see tests/integration/test-distributed.sh). Standard library only.

Used by tests/integration/test-distributed.sh, test-train.tap and
tests/bench/gpu/run_gpu_bench.sh.
"""

import argparse
import array
import json
import struct
import sys

CODES = {"F32": "f", "F64": "d", "I64": "q", "I32": "i"}


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        start, end = t["data_offsets"]
        if t["dtype"] == "F16":
            out[name] = struct.unpack("<%de" % ((end - start) // 2), body[start:end])
            continue
        code = CODES.get(t["dtype"])
        if not code:
            sys.exit("%s: %s is %s, expected F32, F64, F16, I64 or I32" % (path, name, t["dtype"]))
        values = array.array(code)
        values.frombytes(body[start:end])
        if sys.byteorder != "little":
            values.byteswap()
        out[name] = values
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--limit", type=float, default=1e-5)
    ap.add_argument("--skip", action="append", default=[], metavar="TEXT",
                    help="leave out the tensors whose name contains TEXT (repeatable)")
    ap.add_argument("--exact", action="store_true",
                    help="exit 1 unless the compared tensors are bit-identical")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    for part in args.skip:
        a = {k: v for k, v in a.items() if part not in k}
        b = {k: v for k, v in b.items() if part not in k}
    if sorted(a) != sorted(b):
        print("the files hold different tensors")
        return 1
    scale = max((abs(v) for values in b.values() for v in values), default=0.0) or 1.0
    worst, worst_tensor, worst_name, identical = 0.0, 0.0, "-", True
    for name in sorted(a):
        x, y = a[name], b[name]
        if len(x) != len(y):
            print("%s: %d vs %d values" % (name, len(x), len(y)))
            return 1
        # bytes, not values: NaN equals itself there, and -0.0 differs from 0.0
        same = x.tobytes() == y.tobytes() if isinstance(x, array.array) else list(x) == list(y)
        identical = identical and same
        diff = max((abs(p - q) for p, q in zip(x, y)), default=0.0)
        worst = max(worst, diff)
        own = diff / (max((abs(v) for v in y), default=0.0) or 1.0)
        if own > worst_tensor:
            worst_tensor, worst_name = own, name
    print("max |a - b| / max |b| over %d tensors: %.3g (limit %g)%s; worst tensor on its own "
          "scale: %s %.3g" % (len(a), worst / scale, args.limit,
                              ", bit-identical" if identical else "", worst_name, worst_tensor))
    if args.exact and not identical:
        return 1
    return 0 if worst / scale <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
