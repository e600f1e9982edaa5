#!/usr/bin/env python3
"""trainpipe against PyTorch on one GPU (the `bench` part of run_gpu_bench.sh; see
README.md). For each row, alternately, `--rounds` times: trainpipe (tests/bench/bench_backend
--model ..., i.e. model-resnet on the graph executor and backend-cuda), trainpipe with
step capture (bench_backend --capture: forward, loss, backward and the grouped update
replayed from one CUDA graph, what `capture_step = true` does; GPU only; the ResNet-20 rows
also with --per-tensor-update), PyTorch eager, and PyTorch with
torch.compile (torch_gpu_bench.py). PyTorch runs in one process per row that
lives across the rounds, so torch.compile compiles once per row (its time is reported
separately); trainpipe starts a fresh process each round, its first steps being warm-up.

Rows (GPU):
  r20_fp32  ResNet-20, CIFAR shapes, batch 128, fp32, TF32 off on both sides, NCHW
  r20_bf16  ResNet-20, batch 128, bf16 (trainpipe precision = bf16 / PyTorch autocast
            bf16 with fp32 weights), NHWC / channels-last
  r50_bf16  ResNet-50, ImageNet shapes, batch 256, bf16, NHWC / channels-last
  r20_fp32_cl  ResNet-20, batch 128, fp32 (TF32 off), NHWC / channels-last: the layout in
            which backend-cuda's batch norm runs on its own kernels, fused with the ReLU
With --device cpu (the harness's dry run) the same rows run on backend-cpu and PyTorch's CPU
with tiny batches and step counts; trainpipe's CPU backend has no precision setting, so its
bf16 rows run fp32 there (said in the table). The numbers only show that the harness works.

Writes OUT/bench.jsonl (every measurement, one JSON line each, as it happens), OUT/bench.md
(the table) and, with --profile, OUT/profile-resnet20-fp32.txt (NCHW),
profile-resnet20-bf16.txt and profile-resnet50-bf16.txt (NHWC) (bench_backend --profile:
every backend call the graph makes, timed). Prints the table last.
Exit status: 0 when every trainpipe measurement succeeded, 1 otherwise (PyTorch failures
are reported as n/a in the table but do not fail the run).
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# key, label, model, batch, precision, trainpipe layout, steps, warmup (GPU)
GPU_ROWS = [
    ("r20_fp32", "ResNet-20 3x32x32 b128 fp32 (TF32 off), NCHW", "resnet20", 128, "fp32",
     "nchw", 50, 10),
    ("r20_bf16", "ResNet-20 3x32x32 b128 bf16, NHWC/CL", "resnet20", 128, "bf16", "nhwc",
     50, 10),
    ("r50_bf16", "ResNet-50 3x224x224 b256 bf16, NHWC/CL", "resnet50", 256, "bf16", "nhwc",
     15, 3),
    ("r20_fp32_cl", "ResNet-20 3x32x32 b128 fp32 (TF32 off), NHWC/CL", "resnet20", 128,
     "fp32", "nhwc", 50, 10),
]
# The dry run on a CPU: same rows, tiny. (*: trainpipe's CPU backend has no precision
# setting, so its side of the bf16 rows runs fp32; PyTorch autocasts to bf16 on the CPU.)
CPU_ROWS = [
    ("r20_fp32", "ResNet-20 b32 fp32, NCHW [CPU dry run]", "resnet20", 32, "fp32", "nchw",
     3, 1),
    ("r20_bf16", "ResNet-20 b8 bf16*, NHWC/CL [CPU dry run]", "resnet20", 8, "bf16", "nhwc",
     2, 1),
    ("r50_bf16", "ResNet-50 b2 bf16*, NHWC/CL [CPU dry run]", "resnet50", 2, "bf16", "nhwc",
     1, 1),
    ("r20_fp32_cl", "ResNet-20 b8 fp32, NHWC/CL [CPU dry run]", "resnet20", 8, "fp32",
     "nhwc", 2, 1),
]
IMPLS = ("trainpipe", "trainpipe graph", "torch eager", "torch compile")
# What the grouped optimizer update (plugin API 1.7) gains inside the recorded step: the
# ResNet-20 rows also run bench_backend --capture --per-tensor-update (one update launch per
# parameter tensor, as before API 1.7), right after the grouped run of the same round.
PER_TENSOR = "trainpipe graph, per-tensor update"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class TorchServer:
    """torch_gpu_bench.py serve for one row: started once, asked for one measurement at a
    time, each answer awaited with a timeout (a hung compile must not eat the whole run)."""

    def __init__(self, python, args, timeout, stderr_path):
        self.err = open(stderr_path, "ab")
        cmd = [python, os.path.join(HERE, "torch_gpu_bench.py"), "serve"] + args
        log("  start: " + " ".join(cmd))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.lines = queue.Queue()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.err, text=True, env=env)
        except OSError as e:
            self.proc = None
            self.ready = {"error": "n/a: cannot start %s: %s" % (python, e)}
            return
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._answer(timeout)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, timeout):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                self.close()
                return {"error": "n/a: no answer within %.0f s" % timeout}
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait()
                return {"error": "n/a: PyTorch process exited (%s); see torch-stderr.log" % rc}
            if line.startswith('{"'):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if "reply" in obj:
                    return obj

    def ask(self, impl, steps, warmup, timeout):
        if self.proc.poll() is not None:
            return {"error": "n/a: PyTorch process is gone"}
        try:
            self.proc.stdin.write("%s %d %d\n" % (impl, steps, warmup))
            self.proc.stdin.flush()
        except OSError as e:
            return {"error": "n/a: %s" % e}
        return self._answer(timeout)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def run_trainpipe(cmd, env, timeout, log_path):
    """bench_backend --json: the last JSON line, or {"error": ...}."""
    with open(log_path, "a") as lf:
        lf.write("$ %s\n" % " ".join(cmd))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            lf.write("timed out after %d s\n" % timeout)
            return {"error": "timed out after %d s" % timeout}
        except OSError as e:
            return {"error": str(e)}
        lf.write(r.stdout + r.stderr + "exit %d\n" % r.returncode)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["?"]
        return {"error": "exit %d: %s" % (r.returncode, tail[0][:200])}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": "no JSON line in the output"}


def fmt(v):
    if v is None:
        return "n/a"
    return "%.0f" % v if v >= 100 else "%.2f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builddir", default=os.environ.get("TP_BUILDDIR", "."),
                    help="the bundle or build tree holding tests/bench/bench_backend")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="result folder")
    ap.add_argument("--work", default=None, help="folder for logs (default: --out)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default="r20_fp32,r20_bf16,r50_bf16,r20_fp32_cl")
    ap.add_argument("--python", default="python3", help="the Python that has torch")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (cpu)")
    ap.add_argument("--budget", type=float, default=420,
                    help="seconds after which no new measurement starts (the table is "
                         "printed with what was measured)")
    ap.add_argument("--profile", action="store_true",
                    help="also save bench_backend --profile of ResNet-20 and ResNet-50 bf16")
    ap.add_argument("--no-torch", action="store_true", help="trainpipe only")
    args = ap.parse_args()
    work = args.work or args.out
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    start = time.time()
    gpu = args.device == "cuda"
    rows = [r for r in (GPU_ROWS if gpu else CPU_ROWS) if r[0] in args.rows.split(",")]
    bench = os.path.join(args.builddir, "tests", "bench", "bench_backend")
    if not os.access(bench, os.X_OK):
        sys.exit("%s: not found (run tests/bench/gpu/bundle.sh, or set --builddir)" % bench)
    # bench_backend gets the bundle's libraries (TP_LD_LIBRARY_PATH, from run_gpu_bench.sh);
    # PyTorch keeps the environment it came with.
    tp_env = dict(os.environ)
    if os.environ.get("TP_LD_LIBRARY_PATH"):
        tp_env["LD_LIBRARY_PATH"] = os.environ["TP_LD_LIBRARY_PATH"]
    backend = "cuda" if gpu else "cpu"
    jsonl = open(os.path.join(args.out, "bench.jsonl"), "w")
    tp_log = os.path.join(work, "bench-trainpipe.log")
    torch_err = os.path.join(work, "torch-stderr.log")

    def record(obj):
        obj["t"] = round(time.time() - start, 1)
        jsonl.write(json.dumps(obj) + "\n")
        jsonl.flush()

    def out_of_time():
        return time.time() - start > args.budget

    results = {r[0]: {i: [] for i in IMPLS + (PER_TENSOR,)} for r in rows}
    notes = {r[0]: {} for r in rows}
    torch_info = {}
    tp_failed = 0
    for key, label, model, batch, precision, layout, steps, warmup in rows:
        tp_cmd = [bench, backend, "--model", model, "--mode", "train", "--batch", str(batch),
                  "--layout", layout, "--steps", str(steps), "--warmup", str(warmup), "--json"]
        if gpu:
            tp_cmd += ["--set", "precision=" + precision]
        else:
            tp_cmd += ["--threads", str(args.threads)]
        tp_timeout = 300 if model == "resnet50" else 120
        server = None
        if not args.no_torch and not out_of_time():
            targs = ["--model", model, "--batch", str(batch), "--precision", precision,
                     "--layout", "cl" if layout == "nhwc" else "nchw", "--device", args.device,
                     "--threads", str(args.threads)]
            server = TorchServer(args.python, targs, 180, torch_err)
            if "error" in server.ready:
                notes[key]["torch"] = server.ready["error"]
                log("  %s: PyTorch: %s" % (key, server.ready["error"]))
                server.close()
                server = None
            else:
                torch_info = server.ready
        impls = IMPLS
        if gpu and model == "resnet20":
            impls = IMPLS[:2] + (PER_TENSOR,) + IMPLS[2:]
        for rnd in range(args.rounds):
            for impl in impls:
                if out_of_time():
                    notes[key].setdefault("budget", "stopped at the %.0f s budget" % args.budget)
                    break
                if impl == "trainpipe":
                    res = run_trainpipe(tp_cmd, tp_env, tp_timeout, tp_log)
                elif impl == "trainpipe graph":
                    if not gpu:  # backend-cpu cannot record its work
                        notes[key][impl] = "n/a: step capture needs backend-cuda"
                        continue
                    res = run_trainpipe(tp_cmd + ["--capture"], tp_env, tp_timeout, tp_log)
                elif impl == PER_TENSOR:
                    res = run_trainpipe(tp_cmd + ["--capture", "--per-tensor-update"], tp_env,
                                        tp_timeout, tp_log)
                elif server is None:
                    continue
                else:
                    what = "compile" if impl == "torch compile" else "eager"
                    # compiling ResNet-50 takes a minute or two; steps themselves seconds
                    timeout = 420 if what == "compile" and not results[key][impl] else 180
                    res = server.ask(what, steps, warmup, timeout)
                    if res.get("error", "").startswith("n/a: no answer"):
                        server = None  # it was killed; the row's PyTorch columns end here
                res.update({"row": key, "round": rnd + 1, "impl_column": impl})
                record(res)
                if "error" in res:
                    notes[key][impl] = res["error"]
                    log("  %-9s round %d %-13s %s" % (key, rnd + 1, impl, res["error"]))
                    if impl.startswith("trainpipe"):
                        tp_failed += 1
                    continue
                results[key][impl].append(res["images_per_s"])
                if "compile_s" in res and res["compile_s"] is not None:
                    notes[key]["compile_s"] = res["compile_s"]
                log("  %-9s round %d %-13s %9.1f images/s" % (key, rnd + 1, impl,
                                                               res["images_per_s"]))
        if server is not None:
            server.close()

    # bench_backend --profile: where trainpipe's time goes, per backend operation and shape
    profiles = []
    if args.profile:
        for model, batch, steps, warmup, precision, layout in (
                ("resnet20", 128 if gpu else 8, 20, 5, "fp32", "nchw"),
                ("resnet20", 128 if gpu else 8, 20, 5, "bf16", "nhwc"),
                ("resnet50", 256 if gpu else 2, 5, 2, "bf16", "nhwc")):
            path = os.path.join(args.out, "profile-%s-%s.txt" % (model, precision))
            if time.time() - start > args.budget + 60:
                profiles.append("%s: skipped (time budget)" % os.path.basename(path))
                continue
            cmd = [bench, backend, "--model", model, "--mode", "train", "--batch", str(batch),
                   "--layout", layout, "--steps", str(steps if gpu else 1),
                   "--warmup", str(warmup if gpu else 1), "--profile"]
            cmd += ["--set", "precision=" + precision] if gpu else ["--threads", str(args.threads)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=tp_env,
                                   timeout=240)
                text, rc = r.stdout + r.stderr, r.returncode
            except subprocess.TimeoutExpired:
                text, rc = "timed out after 240 s\n", "timeout"
            with open(path, "w") as f:
                f.write("$ %s\n%s" % (" ".join(cmd), text))
            profiles.append("%s: %s" % (os.path.basename(path),
                                        "written" if rc == 0 else "FAILED (%s)" % rc))
            if rc != 0:
                tp_failed += 1

    # ------------------------------------------------------------------ the table
    lines = []
    dev = torch_info.get("device_name") or ("CPU (dry run)" if not gpu else "GPU")
    lines.append("trainpipe vs PyTorch, training step throughput (images/s), %s" % dev)
    lines.append("PyTorch %s, cuDNN %s; medians of %d alternating rounds (each: median of "
                 "its steps); %.0f s in all" % (torch_info.get("torch", "n/a"),
                                                torch_info.get("cudnn", "n/a"), args.rounds,
                                                time.time() - start))
    lines.append("")
    head = "%-46s %10s %10s %10s %10s %8s %8s %8s %8s" % (
        "row", "trainpipe", "tp graph", "eager", "compile", "tp/eager", "tp/comp",
        "gr/eager", "gr/comp")
    lines.append(head)
    lines.append("-" * len(head))
    summary = []
    for key, label, *_ in rows:
        med = {i: statistics.median(v) if v else None for i, v in results[key].items()}
        tp, graph = med["trainpipe"], med["trainpipe graph"]

        def ratio(ours, other):
            return "%.2fx" % (ours / other) if ours and other else "n/a"
        lines.append("%-46s %10s %10s %10s %10s %8s %8s %8s %8s" % (
            label, fmt(tp), fmt(graph), fmt(med["torch eager"]), fmt(med["torch compile"]),
            ratio(tp, med["torch eager"]), ratio(tp, med["torch compile"]),
            ratio(graph, med["torch eager"]), ratio(graph, med["torch compile"])))
        summary.append({"row": key, "label": label, "median_images_per_s": med,
                        "rounds": {i: len(v) for i, v in results[key].items()},
                        "notes": notes[key]})
        n = notes[key]
        if "compile_s" in n:
            lines.append("    torch.compile: first compiled step (compilation) %.1f s"
                         % n["compile_s"])
        per_tensor = med[PER_TENSOR]
        if graph and per_tensor:
            lines.append("    step capture with the update per tensor (before API 1.7): %s "
                         "images/s; grouped: %s (%s)" % (fmt(per_tensor), fmt(graph),
                                                         ratio(graph, per_tensor)))
        for what in ("trainpipe", "trainpipe graph", PER_TENSOR, "torch eager",
                     "torch compile", "torch", "budget"):
            if what in n:
                lines.append("    %s: %s" % (what, n[what][:150]))
    lines.append("")
    lines.append("ratios: trainpipe's images/s over PyTorch's (tp: op by op, gr: step capture "
                 "with a CUDA graph); above 1 means trainpipe is faster. Raw measurements: "
                 "bench.jsonl")
    if not gpu:
        lines.append("CPU dry run: tiny sizes, numbers meaningless; *: trainpipe's CPU backend "
                     "has no bf16, its side runs fp32")
    for p in profiles:
        lines.append("profile " + p)
    record({"summary": summary, "torch_info": torch_info})
    jsonl.close()
    table = "\n".join(lines)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write("```\n" + table + "\n```\n")
    print(table)
    return 1 if tp_failed else 0


if __name__ == "__main__":
    sys.exit(main())
