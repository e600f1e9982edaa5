#!/bin/sh
# TensorBoard and CSV loggers: a fresh run, and a run interrupted at step 600 and resumed
# from its step-400 checkpoint, checked with TensorBoard's own Python reader.
set -u
drv="$TP_BUILDDIR/tests/integration/test_loggers"
check="$TP_SRCDIR/integration/test_loggers_check.py"
py="${PYTHON:-python3}"

command -v "$py" >/dev/null 2>&1 || { echo "SKIP: no $py"; exit 77; }
if ! "$py" -c 'import tensorboard, numpy' 2>/dev/null; then
    echo "installing the tensorboard Python package (pip install tensorboard)"
    "$py" -m pip install --quiet tensorboard numpy >/dev/null 2>&1 ||
        { echo "SKIP: the tensorboard Python package cannot be installed"; exit 77; }
    "$py" -c 'import tensorboard, numpy' || { echo "SKIP: tensorboard not importable"; exit 77; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_loggers_tb.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/fresh" "$tmp/resumed" || exit 1

echo "== fresh run"
"$drv" train "$tmp/fresh" 1000 0 || { echo "FAIL: driver"; exit 1; }
"$py" "$check" "$tmp/fresh" 0 || exit 1

echo "== interrupted at 600, resumed from 400"
"$drv" train "$tmp/resumed" 600 0 || { echo "FAIL: driver (first attempt)"; exit 1; }
"$drv" train "$tmp/resumed" 1000 1 400 || { echo "FAIL: driver (resumed)"; exit 1; }
"$py" "$check" "$tmp/resumed" 400 || exit 1
echo "PASS"
