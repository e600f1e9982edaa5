#!/usr/bin/env python3
"""Compares builds of backend-cpu operation by operation on this machine.

Each DIR holds a backend-cpu.so (for instance a copy of plugins/.libs from an older commit).
The script runs `bench_backend cpu --model M --profile` with TP_PLUGIN_DIR=DIR, alternating
the directories for --rounds rounds, and prints for every operation row (and the whole
step) the smallest ms per step any round of each directory gave. A shared machine's
neighbours slow whole runs down by up to 2x here; the minimum over alternated rounds is the
figure they disturb least, and alternating keeps a slow spell from landing on one side.

    tests/bench/cpu/compare_plugins.py --rounds 4 -- /tmp/old-plugins plugins/.libs
    tests/bench/cpu/compare_plugins.py --set precision=bf16 --threads 2 -- OLD NEW
"""
import argparse
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# "conv_forward           16 ch 32x32                 7.0        4.281       29.965   10.6%"
ROW = re.compile(r"^(?P<name>[a-z_]+(?:\s+\d+ ch \d+x\d+|\s+\d+ values)?)\s+"
                 r"(?P<calls>[\d.]+)\s+(?P<per_call>[\d.]+)\s+(?P<per_step>[\d.]+)\s+[\d.]+%$")
TOTAL = re.compile(r"^operations: (?P<ms>[\d.]+) ms/step")


def profile(bench, plugin_dir, args):
    """One bench_backend run: {row name: ms per step}, with the step's total as 'step'."""
    cmd = [bench, "cpu", "--model", args.model, "--profile", "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    for kv in args.set or []:
        cmd += ["--set", kv]
    env = dict(os.environ, TP_PLUGIN_DIR=os.path.abspath(plugin_dir))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare_plugins: {' '.join(cmd)} (TP_PLUGIN_DIR={plugin_dir}) failed with "
                 f"status {out.returncode}:\n{out.stdout}{out.stderr}")
    rows = {}
    for line in out.stdout.splitlines():
        m = ROW.match(line.strip())
        if m:
            rows[" ".join(m["name"].split())] = float(m["per_step"])
        m = TOTAL.match(line.strip())
        if m:
            rows["step (all operations)"] = float(m["ms"])
    if "step (all operations)" not in rows:
        sys.exit(f"compare_plugins: no profile in the output of {' '.join(cmd)}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="folders holding a backend-cpu.so each")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "resnet50"])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="0: bench_backend's default")
    ap.add_argument("--batch", type=int, default=0, help="0: bench_backend's default")
    ap.add_argument("--set", action="append", help="backend parameter KEY=VALUE")
    ap.add_argument("--min-ms", type=float, default=0.3,
                    help="leave out rows below this many ms per step in every directory")
    args = ap.parse_args()
    bench = os.path.join(os.environ.get("TP_BUILDDIR", TOP), "tests", "bench", "bench_backend")
    for d in args.dirs:
        if not os.path.isfile(os.path.join(d, "backend-cpu.so")):
            sys.exit(f"compare_plugins: {d} holds no backend-cpu.so")
    best = collections.defaultdict(dict)
    for r in range(args.rounds):
        for d in args.dirs:
            for name, ms in profile(bench, d, args).items():
                best[name][d] = min(best[name].get(d, float("inf")), ms)
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    width = max(len(n) for n in best)
    print(f"smallest ms per step over {args.rounds} alternated rounds "
          f"(bench_backend cpu --model {args.model} --profile"
          + (f" --threads {args.threads}" if args.threads else "")
          + "".join(f" --set {kv}" for kv in args.set or []) + ")")
    print(" " * width + "".join(f"  {os.path.basename(os.path.normpath(d))[-12:]:>12}"
                                for d in args.dirs))
    order = sorted(best, key=lambda n: (n != "step (all operations)",
                                        -max(best[n].values())))
    for name in order:
        values = best[name]
        if name != "step (all operations)" and max(values.values()) < args.min_ms:
            continue
        print(f"{name:<{width}}" + "".join(
            f"  {values[d]:12.3f}" if d in values else f"  {'-':>12}" for d in args.dirs))


if __name__ == "__main__":
    main()
