#!/usr/bin/python3
"""trainpipe against PyTorch on this machine's CPU (run by `make bench`; see README.md).

Runs trainpipe (tests/bench/bench_backend --model ..., i.e. model-resnet on the graph
executor and backend-cpu) and PyTorch (torch_bench.py, NCHW and channels-last) alternately,
`--rounds` times, with the same model, batch size and thread count, and prints a table of
medians and ratios:

  ResNet-20 training step, 3x32x32, 10 classes, batch 128
  the same in bf16 (trainpipe precision = bf16 against torch.autocast; only on a CPU with
    AVX-512 BF16)
  ResNet-20 inference, batch 256
  ResNet-50 training step, 3x224x224, 1000 classes, batch 16, and again in bf16
  time to 90% test accuracy on Fashion-MNIST, conf/default.ini's recipe, pipeline included
    (only with --fmnist or TP_BENCH_FMNIST=1: it trains for several minutes per run)

PyTorch comes from Debian's python3-torch (1.13); when `import torch` fails the script runs
`apt-get install -y python3-torch` (as root, or through sudo), and the PyTorch columns read
"n/a" if that fails too. Nothing is faked: a run that fails prints its error and "n/a".
"""

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

ROWS = [
    # key, label, bench_backend args, torch_bench args
    ("r20_train", "ResNet-20 training step, 3x32x32, batch 128 (images/s)",
     ["--model", "resnet20", "--mode", "train", "--batch", "128", "--steps", "10"],
     ["--model", "resnet20", "--mode", "train", "--batch", "128", "--steps", "10"]),
    # bf16: trainpipe's backend-cpu precision = bf16 (activations and their gradients in
    # bf16, weights and optimizer f32) against PyTorch's CPU autocast to bf16 (f32 weights,
    # bf16 convolutions and what follows them); both need AVX-512 BF16, and pay with AMX
    ("r20_train_bf16", "ResNet-20 training step, bf16, batch 128 (images/s)",
     ["--model", "resnet20", "--mode", "train", "--batch", "128", "--steps", "10",
      "--set", "precision=bf16"],
     ["--model", "resnet20", "--mode", "train", "--batch", "128", "--steps", "10", "--bf16"]),
    ("r20_infer", "ResNet-20 inference, 3x32x32, batch 256 (images/s)",
     ["--model", "resnet20", "--mode", "infer", "--batch", "256", "--steps", "10"],
     ["--model", "resnet20", "--mode", "infer", "--batch", "256", "--steps", "10"]),
    ("r50_train", "ResNet-50 training step, 3x224x224, batch 16 (images/s)",
     ["--model", "resnet50", "--mode", "train", "--batch", "16", "--steps", "5"],
     ["--model", "resnet50", "--mode", "train", "--batch", "16", "--steps", "5"]),
    ("r50_train_bf16", "ResNet-50 training step, bf16, batch 16 (images/s)",
     ["--model", "resnet50", "--mode", "train", "--batch", "16", "--steps", "5",
      "--set", "precision=bf16"],
     ["--model", "resnet50", "--mode", "train", "--batch", "16", "--steps", "5", "--bf16"]),
]
IMPLS = ("trainpipe", "torch NCHW", "torch CL")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def cpu_has_bf16():
    """Whether the CPU has AVX-512 BF16 (or AMX), which backend-cpu's bf16 needs."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def ensure_torch(python):
    """The PyTorch version string, installing python3-torch when it is missing; None when
    PyTorch cannot be had."""
    probe = [python, "-c", "import torch; print(torch.__version__)"]
    r = subprocess.run(probe, capture_output=True, text=True)
    if r.returncode == 0:
        return r.stdout.strip()
    log("PyTorch is missing; installing Debian's python3-torch")
    cmd = ["apt-get", "install", "-y", "python3-torch"]
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            log("not root and no sudo: cannot install python3-torch")
            return None
        cmd = ["sudo", "-n"] + cmd
    if subprocess.run(cmd).returncode != 0:
        log("apt-get install python3-torch failed")
        return None
    r = subprocess.run(probe, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def run_json(cmd, env=None, timeout=1800):
    """Runs cmd and returns the last JSON line of its output, or None (error printed)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        log("  %s: %s" % (" ".join(cmd), e))
        return None
    if r.returncode != 0:
        log("  %s failed (exit %d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-400:]))
        return None
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    log("  %s printed no result" % " ".join(cmd))
    return None


# --------------------------------------------------------------------------- Fashion-MNIST

def trainpipe_fmnist(args):
    """Seconds from starting `trainpipe train conf/default.ini` to its first evaluation at
    or above the target accuracy, with every evaluation's (epoch, accuracy, seconds)."""
    trainpipe = os.path.join(args.builddir, "host", "trainpipe")
    conf = os.path.join(args.srcdir, "conf", "default.ini")
    run_dir = tempfile.mkdtemp(prefix="tp-bench-fmnist-")
    cmd = [trainpipe, "train", conf, "--set", "pipeline.run_dir=" + run_dir,
           "--set", "pipeline.epochs=%d" % args.fmnist_epochs]
    start = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    except OSError as e:
        return None, "n/a (trainpipe train not available: %s)" % e
    try:
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            if "train" in tail[0] and ("unknown" in tail[0] or "usage" in tail[0].lower()):
                return None, "n/a (trainpipe train not available)"
            return None, "n/a (trainpipe train failed: %s)" % tail[0][:120]
        path = os.path.join(run_dir, "metrics.csv")
        if not os.path.exists(path):
            return None, "n/a (no metrics.csv from trainpipe train)"
        evals, reached = [], None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("phase") != "validation" or not row.get("val_error"):
                    continue
                sec = float(row["wall_time"]) - start
                acc = 1.0 - float(row["val_error"])
                evals.append({"epoch": row.get("epoch"), "accuracy": acc, "seconds": sec})
                if reached is None and acc >= args.fmnist_target:
                    reached = sec
        return {"seconds_to_target": reached, "evals": evals}, None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def torch_fmnist(args, layout):
    cmd = [args.python, os.path.join(HERE, "torch_bench.py"), "fmnist", "--threads",
           str(args.threads), "--layout", layout, "--epochs", str(args.fmnist_epochs),
           "--target", str(args.fmnist_target)]
    start = time.time()
    res = run_json(cmd, timeout=7200)
    if res is None:
        return None
    # torch_bench.py counts from its own start; count from the launch, as for trainpipe
    offset = res["process_start"] - start if "process_start" in res else 0.0
    for e in res["evals"]:
        e["seconds"] += offset
    if res["seconds_to_target"] is not None:
        res["seconds_to_target"] += offset
    return res


# --------------------------------------------------------------------------- main

def fmt_rate(v):
    if v is None:
        return "n/a"
    return "%.0f" % v if v >= 100 else "%.2f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builddir", default=os.environ.get("TP_BUILDDIR", "."),
                    help="top build directory (holds tests/bench/bench_backend, host/trainpipe)")
    ap.add_argument("--srcdir", default=os.path.normpath(os.path.join(HERE, "..", "..", "..")),
                    help="top source directory (holds conf/default.ini)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for both (default: all cores)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("TP_BENCH_ROUNDS", "3")),
                    help="alternating rounds per row (medians are reported)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated subset of r20_train, r20_train_bf16, r20_infer, "
                         "r50_train, r50_train_bf16 (default: all; the bf16 rows only on a "
                         "CPU with AVX-512 BF16)")
    ap.add_argument("--fmnist", action="store_true",
                    default=os.environ.get("TP_BENCH_FMNIST", "") not in ("", "0"),
                    help="also time Fashion-MNIST to 90%% (minutes; or TP_BENCH_FMNIST=1)")
    ap.add_argument("--fmnist-epochs", type=int, default=3)
    ap.add_argument("--fmnist-target", type=float, default=0.90)
    ap.add_argument("--fmnist-rounds", type=int,
                    default=int(os.environ.get("TP_BENCH_FMNIST_ROUNDS", "1")))
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="the Python that has (or gets) Debian's torch")
    args = ap.parse_args()

    bench = os.path.join(args.builddir, "tests", "bench", "bench_backend")
    if not os.access(bench, os.X_OK):
        sys.exit("%s not built (run `make bench`)" % bench)
    torch_version = ensure_torch(args.python)
    load_before = loadavg()
    log("CPU benchmark: %s, %d threads, %d rounds; load average %s"
        % (cpu_model(), args.threads, args.rounds, load_before))

    if args.rows is None:
        bf16 = cpu_has_bf16()
        args.rows = "r20_train,%sr20_infer,r50_train%s" % ("r20_train_bf16," if bf16 else "",
                                                          ",r50_train_bf16" if bf16 else "")
    wanted = [r for r in ROWS if r[0] in args.rows.split(",")]
    results = {r[0]: {i: [] for i in IMPLS} for r in wanted}
    bests = {r[0]: {i: [] for i in IMPLS} for r in wanted}  # per run: batch / best step
    for key, label, tp_args, torch_args in wanted:
        for rnd in range(args.rounds):
            # alternate: trainpipe, torch NCHW, torch channels-last, then again
            runs = [("trainpipe", [bench, "--json", "--threads", str(args.threads)] + tp_args)]
            if torch_version:
                for impl, layout in (("torch NCHW", "nchw"), ("torch CL", "cl")):
                    runs.append((impl, [args.python, os.path.join(HERE, "torch_bench.py"),
                                        "throughput", "--threads", str(args.threads),
                                        "--layout", layout] + torch_args))
            for impl, cmd in runs:
                res = run_json(cmd)
                if res is not None:
                    results[key][impl].append(res["images_per_s"])
                    bests[key][impl].append(res["batch"] / res["best_step_s"])
                    log("  %-10s round %d %-10s %8.1f images/s" % (key, rnd + 1, impl,
                                                                  res["images_per_s"]))

    fm = None
    if args.fmnist:
        fm = {i: [] for i in IMPLS}
        fm_note = None
        for rnd in range(args.fmnist_rounds):
            res, note = trainpipe_fmnist(args)
            if res is None:
                fm_note = note
                log("  fmnist: " + note)
            else:
                fm["trainpipe"].append(res["seconds_to_target"])
                log("  fmnist round %d trainpipe: %s" % (rnd + 1, res))
            if torch_version:
                for impl, layout in (("torch NCHW", "nchw"), ("torch CL", "cl")):
                    r = torch_fmnist(args, layout)
                    if r is not None:
                        fm[impl].append(r["seconds_to_target"])
                        log("  fmnist round %d %s: %s" % (rnd + 1, impl, r))
    load_after = loadavg()

    # ------------------------------------------------------------------ the table
    print()
    print("CPU: %s, %d cores online, %d threads for both; load average before %s, after %s"
          % (cpu_model(), os.cpu_count(), args.threads, load_before, load_after))
    print("PyTorch %s; medians of %d alternating rounds (each round: median of its steps)"
          % (torch_version or "n/a", args.rounds))
    print()
    head = "%-58s %10s %11s %10s %8s %8s" % ("benchmark", "trainpipe", "torch NCHW",
                                            "torch CL", "tp/NCHW", "tp/CL")
    print(head)
    print("-" * len(head))
    for key, label, _, _ in wanted:
        med = {i: statistics.median(v) if v else None for i, v in results[key].items()}
        tp = med["trainpipe"]

        def ratio(other):
            return "%.2fx" % (tp / other) if tp and other else "n/a"
        print("%-58s %10s %11s %10s %8s %8s" % (label, fmt_rate(tp), fmt_rate(med["torch NCHW"]),
                                                fmt_rate(med["torch CL"]), ratio(med["torch NCHW"]),
                                                ratio(med["torch CL"])))
        best = {i: max(v) if v else None for i, v in bests[key].items()}
        btp = best["trainpipe"]

        def ratio_b(other):
            return "%.2fx" % (btp / other) if btp and other else "n/a"
        print("%-58s %10s %11s %10s %8s %8s" % ("  (best single step)", fmt_rate(btp),
                                                fmt_rate(best["torch NCHW"]),
                                                fmt_rate(best["torch CL"]),
                                                ratio_b(best["torch NCHW"]),
                                                ratio_b(best["torch CL"])))
    label = "Fashion-MNIST, time to %.0f%% test accuracy (s)" % (100 * args.fmnist_target)
    if fm is None:
        print("%-58s %s" % (label, "not run (set TP_BENCH_FMNIST=1 or pass --fmnist)"))
    else:
        def sec(v):
            vals = [x for x in v if x is not None]
            if not v:
                return None, "n/a"
            if not vals:
                return None, "not reached"
            m = statistics.median(vals)
            return m, "%.0f" % m
        tp, tps = sec(fm["trainpipe"])
        if not fm["trainpipe"] and fm_note:
            tps = fm_note
        cols = [sec(fm[i]) for i in ("torch NCHW", "torch CL")]

        def speedup(other):
            return "%.2fx" % (other / tp) if tp and other else "n/a"
        if len(tps) > 10:
            print("%-58s %s" % (label, tps))
            print("%-58s %10s %11s %10s" % ("", "", cols[0][1], cols[1][1]))
        else:
            print("%-58s %10s %11s %10s %8s %8s" % (label, tps, cols[0][1], cols[1][1],
                                                    speedup(cols[0][0]), speedup(cols[1][0])))
    print()
    print("ratios: trainpipe's throughput over PyTorch's (time rows: PyTorch's time over "
          "trainpipe's); above 1 means trainpipe is faster. 'best single step' rows: the "
          "fastest step seen in any round, which a loaded machine disturbs least")


if __name__ == "__main__":
    main()
