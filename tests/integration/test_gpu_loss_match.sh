#!/bin/sh
# The same 50 training steps on backend-cuda (fp32, TF32 off) and on backend-cpu: same seed,
# weights, data and augmentation, so every step's training loss must agree within 1e-3
# relative (issue 7). The GPU runs four times: op by op in NCHW, op by op channels-last
# (NHWC, where batch norm runs on backend-cuda's own kernels), with capture_step = true in
# NCHW (each full batch replayed from one CUDA graph), and with the defaults (NHWC,
# capture_step = auto); every run must match the CPU the same way, and the captured ones
# must really have replayed, optimizer included. A fifth run stores activations in bf16 (precision = bf16): that
# rounds every activation to 8 significant bits, so it is held to a bound (5e-2), not a
# match. Skipped (77) where backend-cuda cannot start (no GPU, no driver).
#
# Why lr = 0.01 and a CPU-against-itself run: training amplifies rounding differences step
# by step, so two correct fp32 runs that only sum in another order drift apart. Measured on
# train-tiny.ini's own lr (0.05), backend-cpu with 1 thread against 2 threads already
# differed by 9.0e-4 at step 34 (and the H200 by 1.2e-3, 2026-12-04): at the limit itself.
# At lr = 0.01 the CPU's own difference stays near 4e-5, so 1e-3 separates a wrong
# operation from rounding. The test measures that floor every time (1 thread against 2)
# and refuses to judge when it is not at least 5 times under the limit.
set -u
TRAINPIPE="${TP_BUILDDIR:?}/host/trainpipe"
conf="${TP_TOP_SRCDIR:?}/tests/integration/train-tiny.ini"
limit=1e-3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_gpu_loss_match.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

common="--set pipeline.steps=50 --set pipeline.log_every_steps=1 --set pipeline.eval_every_epochs=0
        --set checkpoint.every_steps=0 --set checkpoint.every_epochs=0 --set optimizer.lr=0.01"
# shellcheck disable=SC2086
"$TRAINPIPE" -q train "$conf" --set backend.plugin=cuda --set backend.precision=fp32 \
    --set pipeline.layout=nchw --set pipeline.capture_step=false \
    --set pipeline.run_dir="$tmp/gpu" $common >"$tmp/gpu.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
    if grep -q "no CUDA device\|cudaErrorNoDevice\|cudaErrorInsufficientDriver\|no plugin named 'cuda'\|cannot be loaded" "$tmp/gpu.log"; then
        echo "SKIP: backend-cuda cannot run here: $(head -1 "$tmp/gpu.log")"
        exit 77
    fi
    cat "$tmp/gpu.log"; echo "FAIL: the GPU run failed"; exit 1
fi
for threads in 2 1; do
    # shellcheck disable=SC2086
    "$TRAINPIPE" -q train "$conf" --set backend.cpu.threads=$threads \
        --set pipeline.run_dir="$tmp/cpu$threads" $common >"$tmp/cpu$threads.log" 2>&1 ||
        { cat "$tmp/cpu$threads.log"; echo "FAIL: the CPU run ($threads threads) failed"; exit 1; }
done
# compare NAME CSV [LIMIT]: every step's loss against the 2-thread CPU run's; prints the
# worst relative difference and, with -v, every step. Fails above LIMIT (default $limit).
compare() {
    printf '%s: ' "$1"
    awk -F, -v limit="${3:-$limit}" -v verbose="${VERBOSE:-0}" '
             FNR == 1 {next} FNR == NR && $4 == "train" {cpu[$1] = $5; if ($1 + 0 > last) last = $1 + 0; next}
             $4 == "train" {other[$1] = $5}
             END {
                 n = 0; worst = 0; at = "-"
                 for (s = 0; s <= last; s++) {
                     if (!(s in cpu)) continue
                     if (!(s in other)) {print "FAIL: step " s " missing"; exit 1}
                     d = cpu[s] - other[s]; if (d < 0) d = -d
                     r = d / (cpu[s] < 0 ? -cpu[s] : cpu[s]); if (r > worst) {worst = r; at = s}
                     if (verbose) printf "\n    step %3d: %.8f %.8f  %.3g", s, cpu[s], other[s], r
                     n++
                 }
                 printf "%s%d steps compared, worst relative loss difference %.3g (step %s; limit %g)\n",
                        verbose ? "\n    " : "", n, worst, at, limit
                 exit !(n == 50 && worst <= limit)
             }' "$tmp/cpu2/metrics.csv" "$2"
}
# The floor: the CPU against itself with another thread count must sit well under the limit.
compare "CPU 1 thread against CPU 2 threads (the rounding floor)" "$tmp/cpu1/metrics.csv" \
    "$(awk -v l="$limit" 'BEGIN { print l / 5 }')" ||
    { echo "FAIL: this configuration amplifies rounding too much for a $limit comparison"; exit 1; }
# judge LABEL NAME [LIMIT]: the GPU run NAME against the CPU; every step printed when it fails.
judge() {
    compare "$1" "$tmp/$2/metrics.csv" "${3:-$limit}" ||
        { VERBOSE=1 compare "every step (CPU, GPU, relative)" "$tmp/$2/metrics.csv" "${3:-$limit}"
          echo "FAIL"; exit 1; }
}
# gpu_run NAME REPLAYED [--set ...]: trains fp32 on backend-cuda into $tmp/NAME; with
# REPLAYED = 1 the log must show the step recorded once and replayed.
gpu_run() {
    local name=$1 replayed=$2
    shift 2
    # shellcheck disable=SC2086
    "$TRAINPIPE" train "$conf" --set backend.plugin=cuda --set backend.precision=fp32 "$@" \
        --set pipeline.run_dir="$tmp/$name" $common >"$tmp/$name.log" 2>&1 ||
        { cat "$tmp/$name.log"; echo "FAIL: the GPU run '$name' failed"; exit 1; }
    [ "$replayed" = 1 ] || return 0
    grep "step capture" "$tmp/$name.log"
    if grep -q "recording the training step failed" "$tmp/$name.log" ||
        ! grep -q "step capture: [1-9][0-9]* steps replayed" "$tmp/$name.log"; then
        echo "FAIL: the GPU run '$name' did not replay its recording"; exit 1
    fi
    # The whole step, optimizer included (API 1.6), is what the recording replays.
    grep -q "the optimizer's update is recorded with the step" "$tmp/$name.log" ||
        { echo "FAIL: the GPU run '$name' ran its optimizer outside the recording"; exit 1; }
}
judge "GPU op by op (NCHW, cuDNN batch norm) against the CPU" gpu
# Channels-last on the GPU: batch norm runs on backend-cuda's own kernels instead of cuDNN.
gpu_run nhwc 0 --set pipeline.layout=nhwc --set pipeline.capture_step=false
judge "GPU channels-last (own batch-norm kernels) against the CPU" nhwc
gpu_run graph 1 --set pipeline.capture_step=true --set pipeline.layout=nchw
judge "GPU captured against the CPU" graph
# The defaults on a GPU: channels-last and capture_step = auto (recorded and replayed).
gpu_run default 1
judge "GPU defaults (NHWC, captured) against the CPU" default
# bf16 activations and tensor cores, with the defaults otherwise (NHWC, captured).
gpu_run bf16 1 --set backend.precision=bf16
grep -q "activations stored as bf16" "$tmp/bf16.log" ||
    { grep "activations stored" "$tmp/bf16.log"; echo "FAIL: precision = bf16 did not store bf16 activations"; exit 1; }
judge "GPU bf16 activations (NHWC, captured) against the CPU" bf16 5e-2
echo "PASS"
