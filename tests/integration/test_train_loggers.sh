#!/bin/sh
# A real (small) training run with the TensorBoard and CSV loggers, read back with
# TensorBoard's own Python package; then the same run resumed from an earlier checkpoint
# (new event files with SessionLog START, CSV rows after the resume step replaced).
set -u
TRAINPIPE="${TP_BUILDDIR:?}/host/trainpipe"
conf="${TP_TOP_SRCDIR:?}/tests/integration/train-tiny.ini"
check="$TP_TOP_SRCDIR/tests/integration/test_train_loggers.py"
py="${PYTHON:-python3}"

command -v "$py" >/dev/null 2>&1 || { echo "SKIP: no $py"; exit 77; }
if ! "$py" -c 'import tensorboard, numpy' 2>/dev/null; then
    echo "installing the tensorboard Python package (pip install tensorboard)"
    "$py" -m pip install --quiet tensorboard numpy >/dev/null 2>&1 ||
        { echo "SKIP: the tensorboard Python package cannot be installed"; exit 77; }
    "$py" -c 'import tensorboard, numpy' || { echo "SKIP: tensorboard not importable"; exit 77; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_train_loggers.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
# The tiny pipeline plus a TensorBoard logger with histograms and images.
cat "$conf" - >"$tmp/run.ini" <<'INI'

[logger.tensorboard]
histograms_every = 20
images_every = 25
max_images = 2
INI
train() { "$TRAINPIPE" train "$tmp/run.ini" --set pipeline.run_dir="$tmp/$1" "$@"; }
# lr 0.05, 60 steps, 5 warm-up steps: train-tiny.ini's recipe.
args="0.05 60 5"

echo "== a fresh run"
"$TRAINPIPE" train "$tmp/run.ini" --set pipeline.run_dir="$tmp/fresh" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log"; echo "FAIL: training"; exit 1; }
"$py" "$check" "$tmp/fresh" 0 $args || exit 1

echo "== resumed from its step-40 checkpoint"
"$TRAINPIPE" train "$tmp/run.ini" --set pipeline.run_dir="$tmp/fresh" \
    --resume "$tmp/fresh/checkpoints/step-00000040.ckpt" >"$tmp/log" 2>&1 ||
    { cat "$tmp/log"; echo "FAIL: resumed training"; exit 1; }
grep -q "resuming from .* at step 40" "$tmp/log" || { cat "$tmp/log"; echo "FAIL: not resumed"; exit 1; }
"$py" "$check" "$tmp/fresh" 40 $args || exit 1
echo "PASS"
