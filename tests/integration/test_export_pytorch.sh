#!/bin/sh
# Weights between trainpipe and PyTorch (Debian's python3-torch; skipped without it):
# a trained checkpoint exported with `trainpipe export` loads into a PyTorch CIFAR ResNet
# with strict name and shape checks and gives the same logits within 1e-4; a torchvision
# ResNet-18's state_dict loads through [model] init = FILE and gives torchvision's logits.
set -u
TRAINPIPE="${TP_BUILDDIR:?}/host/trainpipe"
LOGITS="$TP_BUILDDIR/tests/integration/model_logits"
src="${TP_TOP_SRCDIR:?}/tests/integration"
py="${TORCH_PYTHON:-/usr/bin/python3}"
"$py" -c 'import torch, torchvision, numpy' 2>/dev/null ||
    { echo "SKIP: PyTorch is not installed (apt-get install python3-torch python3-torchvision)"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_export_pytorch.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $1"; [ -f "$tmp/log" ] && tail -20 "$tmp/log"; exit 1; }

echo "== trainpipe -> PyTorch: a trained CIFAR ResNet-8"
"$TRAINPIPE" train "$src/train-tiny.ini" --set pipeline.run_dir="$tmp/run" \
    --set pipeline.epochs=1 >"$tmp/log" 2>&1 || fail "training"
ckpt="$tmp/run/checkpoints/step-00000020.ckpt"
"$TRAINPIPE" export "$ckpt" "$tmp/exported.safetensors" >"$tmp/log" 2>&1 || fail "export"
mkdir "$tmp/cifar"
"$LOGITS" "$src/train-tiny.ini" "$tmp/cifar" "$ckpt" >"$tmp/log" 2>&1 || fail "model_logits"
"$py" "$src/test_export_pytorch.py" cifar "$tmp/exported.safetensors" "$tmp/cifar" 8 16 ||
    fail "logits differ"

echo "== torchvision -> trainpipe: ResNet-18 through [model] init = FILE"
"$py" "$src/test_export_pytorch.py" make-torchvision "$tmp/tv.safetensors" || fail "torchvision"
cat >"$tmp/r18.ini" <<INI
[backend]
plugin = cpu
[source.train]
plugin = synthetic
height = 224
width = 224
num_classes = 1000
count = 8
[model]
plugin = resnet
family = imagenet
depth = 18
init = $tmp/tv.safetensors
[optimizer]
plugin = sgd
lr = 0.1
INI
mkdir "$tmp/r18"
"$LOGITS" "$tmp/r18.ini" "$tmp/r18" >"$tmp/log" 2>&1 || fail "model_logits (ResNet-18)"
"$py" "$src/test_export_pytorch.py" torchvision "$tmp/tv.safetensors" "$tmp/r18" ||
    fail "ResNet-18 logits differ"
echo "PASS"
