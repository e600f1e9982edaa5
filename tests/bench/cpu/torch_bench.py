#!/usr/bin/python3
"""PyTorch side of the CPU benchmark (tests/bench/cpu): the same networks trainpipe builds,
timed the same way, and the same Fashion-MNIST recipe for the time-to-accuracy row.

  torch_bench.py params
      prints the parameter counts of the models (asserted against trainpipe's).
  torch_bench.py throughput --model resnet20|resnet50 --mode train|infer --batch N
                            --threads T --layout nchw|cl [--steps S] [--warmup W]
      times S steps after W warm-up steps; prints one JSON line.
  torch_bench.py fmnist --threads T --epochs E [--target 0.90] [--data DIR]
      trains ResNet-20 A on Fashion-MNIST with conf/default.ini's recipe, evaluating after
      every epoch; prints one JSON line with the seconds from the start of the process to the
      first evaluation at or above the target accuracy.

Written for Debian's python3-torch 1.13 (and python3-torchvision 0.14 when present); runs
with /usr/bin/python3. Nothing here is used by `make check`.
"""

import argparse
import gzip
import json
import math
import os
import statistics
import struct
import sys
import time

PROCESS_START = time.time()  # the Fashion-MNIST row counts from here, imports included

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

RESNET20_A_PARAMS = 269722  # trainpipe: model-resnet family=cifar depth=20 shortcut=A, 10 classes
RESNET50_PARAMS = 25557032  # trainpipe: model-resnet family=imagenet depth=50, 1000 classes


# --------------------------------------------------------------------------- models

class CifarBlock(nn.Module):
    """He et al. 2015 basic block with shortcut A: the identity, or x[:, :, ::s, ::s] with
    zero channels appended (trainpipe's subsample_pad puts the input channels first)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.extra = cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra:
            shortcut = x[:, :, ::self.stride, ::self.stride]
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images, as model-resnet family=cifar version=v1 shortcut=A."""

    def __init__(self, depth=20, in_channels=3, num_classes=10, width=16):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        cin = width
        for stage in range(3):
            cout = width << stage
            blocks = []
            for k in range(n):
                blocks.append(CifarBlock(cin, cout, 2 if stage > 0 and k == 0 else 1))
                cin = cout
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(cin, num_classes)
        # trainpipe's default init: He normal (fan_out) for convolutions, BN gamma 1 beta 0,
        # PyTorch's default uniform init for fc.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride on the 3x3), used only when torchvision is
    missing."""

    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * 4
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet50(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, (mid, count) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            blocks = []
            for k in range(count):
                blocks.append(Bottleneck(cin, mid, 2 if i > 0 and k == 0 else 1))
                cin = mid * 4
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet50():
    """torchvision's resnet50 when python3-torchvision is installed, else the copy above."""
    try:
        import torchvision
        return torchvision.models.resnet50(), "torchvision %s" % torchvision.__version__
    except ImportError:
        return ResNet50(), "bench's own v1.5"


def param_count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_model(name, in_channels=3, num_classes=None):
    if name == "resnet20":
        model, origin = CifarResNet(20, in_channels, num_classes or 10), "cifar A"
        expect = RESNET20_A_PARAMS if (in_channels, num_classes or 10) == (3, 10) else None
    elif name == "resnet50":
        (model, origin), expect = resnet50(), RESNET50_PARAMS
    else:
        raise SystemExit("unknown model %s" % name)
    count = param_count(model)
    if expect is not None and count != expect:
        raise SystemExit("%s has %d parameters, trainpipe's has %d" % (name, count, expect))
    return model, origin, count


def sgd(model, lr=0.1):
    # conf/default.ini's optimizer: Nesterov SGD, momentum 0.9, weight decay 5e-4
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)


# --------------------------------------------------------------------------- throughput

def throughput(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model, origin, count = make_model(args.model)
    size, classes = (32, 10) if args.model == "resnet20" else (224, 1000)
    fmt = torch.channels_last if args.layout == "cl" else torch.contiguous_format
    x = torch.rand(args.batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (args.batch,))
    model = model.to(memory_format=fmt)
    times = []
    if args.mode == "train":
        model.train()
        opt = sgd(model)
        loss_fn = nn.CrossEntropyLoss()
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            # --bf16: PyTorch's mixed precision on the CPU (autocast to bf16: convolutions
            # and what follows them in bf16, the weights and their update in f32)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        if not math.isfinite(loss.item()):
            raise SystemExit("training diverged")
    else:
        model.eval()
        with torch.inference_mode():
            for i in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                model(x)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "torch", "model": args.model, "mode": args.mode, "batch": args.batch,
        "layout": args.layout, "threads": torch.get_num_threads(), "params": count,
        "bf16": bool(getattr(args, "bf16", False)),
        "model_origin": origin, "steps": args.steps, "median_step_s": med,
        "best_step_s": min(times), "images_per_s": args.batch / med,
        "torch": torch.__version__,
    }))


# --------------------------------------------------------------------------- Fashion-MNIST

def read_idx(path):
    """An IDX file (gzip or not) as a uint8 tensor (the two Fashion-MNIST kinds: images
    N x 28 x 28 and labels N)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit("%s: not an unsigned-byte IDX file" % path)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def find_idx(directory, stem):
    for name in (stem + ".gz", stem):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise SystemExit("%s: no %s(.gz)" % (directory, stem))


def crop_flip(batch, pad, gen):
    """conf/default.ini's augmentation on a batch (N,1,H,W) in [0,1]: zero padding `pad`
    on every side, a random crop back to H x W, and a horizontal flip with probability 0.5,
    drawn per image."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (oy[:, None] + torch.arange(h)[None, :])              # n x h
    cols = (ox[:, None] + torch.arange(w)[None, :])              # n x w
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    return padded[idx_n, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


def fmnist(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    train_x = read_idx(find_idx(args.data, "train-images-idx3-ubyte"))
    train_y = read_idx(find_idx(args.data, "train-labels-idx1-ubyte")).long()
    test_x = read_idx(find_idx(args.data, "t10k-images-idx3-ubyte"))
    test_y = read_idx(find_idx(args.data, "t10k-labels-idx1-ubyte")).long()
    # input_scale 1/255, no normalisation (conf/default.ini)
    train_x = (train_x.float() / 255.0).unsqueeze(1)
    test_x = (test_x.float() / 255.0).unsqueeze(1)
    fmt = torch.channels_last if args.layout == "cl" else torch.contiguous_format
    model, _, count = make_model("resnet20", in_channels=1, num_classes=10)
    model = model.to(memory_format=fmt)
    batch = 128
    steps_per_epoch = train_x.shape[0] // batch  # trainpipe drops the last partial batch
    opt = sgd(model)
    # OneCycleLR defaults (pct_start 0.3, div 25, final div 1e4, cosine) with max_lr 0.1;
    # momentum is not cycled because trainpipe's onecycle keeps the optimizer's momentum.
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=steps_per_epoch * args.epochs,
        cycle_momentum=args.cycle_momentum)
    loss_fn = nn.CrossEntropyLoss()
    evals, reached = [], None
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(train_x.shape[0], generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            xb = crop_flip(train_x[idx], 4, gen).contiguous(memory_format=fmt)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), train_y[idx])
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, test_x.shape[0], 256):
                xb = test_x[i:i + 256].contiguous(memory_format=fmt)
                correct += (model(xb).argmax(1) == test_y[i:i + 256]).sum().item()
        acc = correct / test_x.shape[0]
        elapsed = time.time() - PROCESS_START
        evals.append({"epoch": epoch + 1, "accuracy": acc, "seconds": elapsed})
        print("epoch %d: test accuracy %.4f at %.1f s" % (epoch + 1, acc, elapsed),
              file=sys.stderr)
        if reached is None and acc >= args.target:
            reached = elapsed
            if args.stop_at_target:
                break
    print(json.dumps({
        "impl": "torch", "model": "resnet20", "mode": "fmnist", "layout": args.layout,
        "threads": torch.get_num_threads(), "params": count, "epochs": args.epochs,
        "target": args.target, "seconds_to_target": reached, "evals": evals,
        "process_start": PROCESS_START, "torch": torch.__version__,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("params")
    t = sub.add_parser("throughput")
    t.add_argument("--model", choices=("resnet20", "resnet50"), default="resnet20")
    t.add_argument("--mode", choices=("train", "infer"), default="train")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--layout", choices=("nchw", "cl"), default="nchw")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--bf16", action="store_true",
                   help="train under torch.autocast('cpu', dtype=torch.bfloat16)")
    f = sub.add_parser("fmnist")
    f.add_argument("--threads", type=int, default=os.cpu_count())
    f.add_argument("--layout", choices=("nchw", "cl"), default="cl")
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--target", type=float, default=0.90)
    f.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    f.add_argument("--stop-at-target", action="store_true")
    f.add_argument("--cycle-momentum", action="store_true",
                   help="let OneCycleLR cycle momentum 0.85..0.95 (its default; trainpipe "
                        "does not)")
    args = ap.parse_args()
    if args.cmd == "params":
        for name in ("resnet20", "resnet50"):
            _, origin, count = make_model(name)
            print("%s (%s): %d parameters" % (name, origin, count))
    elif args.cmd == "throughput":
        throughput(args)
    else:
        fmnist(args)


if __name__ == "__main__":
    main()
