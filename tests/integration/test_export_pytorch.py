#!/usr/bin/env python3
"""trainpipe's weights in PyTorch, both ways.

  test_export_pytorch.py cifar EXPORTED.safetensors DIR DEPTH WIDTH
      Builds the CIFAR ResNet (v1, shortcut A) in PyTorch, loads the file trainpipe exported
      with strict checking, runs DIR/input.f32 in eval mode and compares with DIR/logits.f32
      (what trainpipe computed with the same weights).
  test_export_pytorch.py make-torchvision OUT.safetensors
      Writes a torchvision ResNet-18 (random weights and batch-norm statistics, seed 7) as a
      safetensors file, for trainpipe's [model] init = FILE.
  test_export_pytorch.py torchvision OUT.safetensors DIR
      Loads that file back into torchvision's ResNet-18 and compares its logits on
      DIR/input.f32 with DIR/logits.f32 (trainpipe's, from the same file).
The safetensors reading and writing is done here with json and struct (no extra package).
Exit status 0 pass, 1 fail.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TOLERANCE = 1e-4
DTYPES = {"F32": (np.float32, torch.float32), "I64": (np.int64, torch.int64)}


def load_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        npt, _ = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=npt).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        arr = t.detach().cpu().numpy()
        dtype = "I64" if arr.dtype == np.int64 else "F32"
        arr = arr.astype(np.int64 if dtype == "I64" else np.float32)
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class BasicBlockA(nn.Module):
    """He et al.'s CIFAR block; shortcut A: x[:, :, ::s, ::s] with zero channels appended."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
        return F.relu(y + s)


class CifarResNet(nn.Module):
    def __init__(self, depth, width, in_ch, classes):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin, layers = width, []
        for i in range(3):
            cout = width * 2 ** i
            blocks = [BasicBlockA(cin if j == 0 else cout, cout, 2 if (i and j == 0) else 1)
                      for j in range(n)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def trainpipe_io(d):
    n, c, h, w, k = map(int, open(f"{d}/shape.txt").read().split())
    x = np.fromfile(f"{d}/input.f32", dtype=np.float32).reshape(n, c, h, w)
    logits = np.fromfile(f"{d}/logits.f32", dtype=np.float32).reshape(n, k)
    return torch.from_numpy(x), logits, (n, c, h, w, k)


def compare(model, d, what):
    x, want, _ = trainpipe_io(d)
    model.eval()
    with torch.no_grad():
        got = model(x).numpy()
    scale = max(1.0, float(np.abs(want).max()))
    diff = float(np.abs(got - want).max())
    print(f"{what}: logits {got.shape}, max |PyTorch - trainpipe| = {diff:.3g} "
          f"(relative to max |logit| {diff / scale:.3g}, tolerance {TOLERANCE})")
    return 0 if diff / scale <= TOLERANCE and np.isfinite(got).all() else 1


def main():
    torch.set_num_threads(2)
    mode = sys.argv[1]
    if mode == "cifar":
        path, d, depth, width = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        _, _, (n, c, h, w, k) = trainpipe_io(d)
        model = CifarResNet(depth, width, c, k)
        state = load_safetensors(path)
        model.load_state_dict(state, strict=True)  # every name and shape must match
        print(f"loaded {len(state)} tensors into a PyTorch CIFAR ResNet-{depth} (strict)")
        return compare(model, d, f"ResNet-{depth} {c}x{h}x{w}")
    import torchvision
    if mode == "make-torchvision":
        torch.manual_seed(7)
        model = torchvision.models.resnet18()
        for m in model.modules():  # non-trivial statistics, so inference mode is tested
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        save_safetensors(sys.argv[2], model.state_dict())
        print(f"torchvision ResNet-18 state_dict ({len(model.state_dict())} tensors) written")
        return 0
    if mode == "torchvision":
        model = torchvision.models.resnet18()
        model.load_state_dict(load_safetensors(sys.argv[2]), strict=True)
        return compare(model, sys.argv[3], "torchvision ResNet-18 224x224")
    print(f"unknown mode {mode}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
