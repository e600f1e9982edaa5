#!/usr/bin/env python3
"""PyTorch side of the GPU benchmark (tests/bench/gpu/README.md): the networks of
tests/bench/cpu/torch_bench.py (imported, not copied: ResNet-20 with shortcut A, and
torchvision's ResNet-50, parameter counts asserted against trainpipe's), trained with the
step bench_backend times: zero_grad, forward, CrossEntropyLoss, backward, SGD (Nesterov,
lr 0.1, momentum 0.9, weight decay 5e-4), on random inputs in [0, 1) and fixed labels.
Each step is timed on the host up to torch.cuda.synchronize(), as bench_backend ends each
step with the backend's sync(); the median step is reported.

Precision (--precision):
  fp32  float32 throughout, TF32 off for cuDNN and cuBLAS (trainpipe: precision = fp32)
  bf16  autocast to bfloat16 around forward and loss, float32 weights and optimizer
        (trainpipe: precision = bf16, tensor cores on its float32 tensors)
Layout (--layout): nchw, or cl (channels-last model and input; trainpipe: --layout nhwc).

  torch_gpu_bench.py run --model resnet20|resnet50 --batch N --precision fp32|bf16
                         --layout nchw|cl [--compile] [--steps S] [--warmup W]
                         [--device cuda|cpu] [--threads T]
      one measurement; prints one JSON line.
  torch_gpu_bench.py serve (same options, no --compile/--steps/--warmup)
      builds the model once, prints a JSON "ready" line, then answers commands on stdin,
      one JSON line each: `eager STEPS WARMUP`, `compile STEPS WARMUP`, `quit`. The first
      `compile` compiles (torch.compile, default mode, on the model) and reports the time
      of that first compiled step as compile_s; later ones reuse the compiled model, so a
      harness can alternate with trainpipe without compiling once per round. A compile
      failure is reported as {"error": "n/a: ..."} (and again for every later `compile`),
      never as a crash.

Output lines that carry a result start with {"reply": ...}; everything else (warnings from
the compiler, say) goes to stderr.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cpu"))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import torch_bench  # noqa: E402  (tests/bench/cpu: the model definitions and the optimizer)


def reply(obj):
    obj = dict(obj)
    obj.setdefault("reply", "result")
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def set_tf32(enabled):
    """TF32 on or off for cuDNN convolutions and cuBLAS matrix products; returns what the
    flags read afterwards. Releases since 2.9 have per-backend `fp32_precision` settings
    ("ieee" = no TF32) and warn about the older allow_tf32 flags (and refuse reads when the
    two disagree), so both are set, to the same thing."""
    prec = "tf32" if enabled else "ieee"
    flags = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, obj in (("matmul", torch.backends.cuda.matmul),
                          ("cudnn_conv", getattr(torch.backends.cudnn, "conv", None))):
            try:  # (torch 1.13's matmul object raises AssertionError for unknown names)
                known = obj is not None and hasattr(obj, "fp32_precision")
            except Exception:  # noqa: BLE001
                known = False
            if known:
                try:
                    obj.fp32_precision = prec
                    flags[name + "_fp32_precision"] = obj.fp32_precision
                except Exception as e:  # noqa: BLE001 - recorded, the legacy flags follow
                    flags[name + "_fp32_precision"] = "not set: %s" % e
        try:
            torch.backends.cuda.matmul.allow_tf32 = enabled
            torch.backends.cudnn.allow_tf32 = enabled
            flags["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
            flags["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        except Exception as e:  # noqa: BLE001 - reading back is informative only
            flags["allow_tf32"] = "not set or unreadable: %s" % e
    return flags


class Bench:
    def __init__(self, args):
        self.args = args
        self.cuda = args.device == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("torch.cuda.is_available() is False")
        if not self.cuda:
            torch.set_num_threads(args.threads)
        torch.manual_seed(1)
        self.flags = set_tf32(False) if self.cuda else {}
        if self.cuda:
            torch.backends.cudnn.benchmark = False  # trainpipe default: cuDNN's heuristics
        model, self.origin, self.params = torch_bench.make_model(args.model)
        size, classes = (32, 10) if args.model == "resnet20" else (224, 1000)
        dev = torch.device(args.device)
        self.fmt = torch.channels_last if args.layout == "cl" else torch.contiguous_format
        self.model = model.to(dev).to(memory_format=self.fmt).train()
        self.x = torch.rand(args.batch, 3, size, size, device=dev).contiguous(
            memory_format=self.fmt)
        self.y = (torch.arange(args.batch, device=dev) * 7) % classes  # as bench_backend
        self.opt = torch_bench.sgd(self.model)
        self.loss_fn = nn.CrossEntropyLoss()
        self.compiled = None
        self.compile_error = None
        self.compile_s = None

    def autocast(self):
        if self.args.precision == "bf16":
            return torch.autocast(device_type=self.args.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def step(self, net):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss_fn(net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def measure(self, impl, steps, warmup):
        net = self.model
        if impl == "compile":
            if self.compile_error:
                return {"error": self.compile_error}
            if not hasattr(torch, "compile"):
                self.compile_error = "n/a: torch %s has no torch.compile" % torch.__version__
                return {"error": self.compile_error}
            if self.compiled is None:
                try:
                    self.compiled = torch.compile(self.model)
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    self.compile_error = "n/a: torch.compile: %s: %s" % (type(e).__name__, e)
                    return {"error": self.compile_error[:400]}
            net = self.compiled
            warmup = max(warmup, 1)  # the first compiled step compiles: never timed
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                loss = self.step(net)
                self.sync()
                dt = time.perf_counter() - t0
                if impl == "compile" and self.compile_s is None:
                    self.compile_s = dt  # the first compiled step compiles forward+backward
                if i >= warmup:
                    times.append(dt)
            final_loss = float(loss.item())
        except Exception as e:  # noqa: BLE001 - a failing configuration is a result too
            msg = "n/a: %s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            if impl == "compile":
                self.compile_error = msg[:400]
                self.compiled = None
            return {"error": msg[:400]}
        finally:
            if self.cuda:
                peak = torch.cuda.max_memory_allocated()
                torch.cuda.empty_cache()  # leave the GPU's memory to the next trainpipe run
        if not math.isfinite(final_loss):
            return {"error": "n/a: training diverged (loss %r)" % final_loss}
        med = statistics.median(times)
        a = self.args
        res = {
            "impl": "torch " + impl, "model": a.model, "mode": "train", "batch": a.batch,
            "precision": a.precision, "layout": a.layout, "device": a.device,
            "params": self.params, "model_origin": self.origin, "steps": steps,
            "warmup": warmup, "median_step_s": med, "best_step_s": min(times),
            "images_per_s": a.batch / med, "loss": final_loss, "torch": torch.__version__,
        }
        if impl == "compile":
            res["compile_s"] = self.compile_s
        if self.cuda:
            res["peak_memory_gib"] = peak / 2 ** 30
        res.update(self.flags)
        return res

    def describe(self):
        d = {"reply": "ready", "torch": torch.__version__, "params": self.params,
             "model_origin": self.origin, "device": self.args.device}
        if self.cuda:
            d["device_name"] = torch.cuda.get_device_name()
            d["cudnn"] = torch.backends.cudnn.version()
            d["cuda"] = torch.version.cuda
        d.update(self.flags)
        return d


def serve(args):
    b = Bench(args)
    reply(b.describe())
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] in ("eager", "compile") and len(words) == 3:
            reply(b.measure(words[0], int(words[1]), int(words[2])))
        else:
            reply({"error": "unknown command %r" % line.strip()})


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--model", choices=("resnet20", "resnet50"), default="resnet20")
        p.add_argument("--batch", type=int, default=128)
        p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
        p.add_argument("--layout", choices=("nchw", "cl"), default="nchw")
        p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        p.add_argument("--threads", type=int, default=os.cpu_count(),
                       help="CPU threads (--device cpu)")
        if name == "run":
            p.add_argument("--compile", action="store_true")
            p.add_argument("--steps", type=int, default=20)
            p.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
        return 0
    b = Bench(args)
    res = b.measure("compile" if args.compile else "eager", args.steps, args.warmup)
    reply(res)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
