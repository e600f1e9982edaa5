#!/bin/sh
# Data-parallel scaling benchmark (issue 9): trains CONFIG for a fixed number of steps on
# 1, 2, 4, ... ranks with the same per-rank batch (weak scaling) and prints images/s in total
# and per rank, and the efficiency against one rank.
#
#   tests/bench/run_scaling.sh [--trainpipe PATH] [--ranks "1 2 4 8"] [--steps S]
#                              [--mpirun] [--out FILE] CONFIG [--set SECTION.KEY=VALUE]...
#
# Ranks start through `[pipeline] gpus = N` (one process per GPU, trainpipe's own launcher)
# or, with --mpirun, through `mpirun -np N`. Each run logs every 10 steps to a CSV in a
# temporary run dir; the figure is the median images_per_sec of the training rows after the
# first (which holds start-up: cuDNN algorithm search, the first allocations). A benchmark,
# never part of `make check`; share/doc/performance.md records its results.
set -eu

trainpipe=${TRAINPIPE:-}
ranks="1 2 4 8"
steps=200
use_mpirun=0
out=
while [ $# -gt 0 ]; do
    case $1 in
        --trainpipe) trainpipe=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --mpirun) use_mpirun=1; shift ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "run_scaling.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: run_scaling.sh [options] CONFIG [--set ...]" >&2; exit 2; }
config=$1
shift
if [ -z "$trainpipe" ]; then
    trainpipe=$(command -v trainpipe || true)
    [ -n "$trainpipe" ] || { echo "run_scaling.sh: no trainpipe on PATH; use --trainpipe" >&2; exit 2; }
fi
case $steps in '' | *[!0-9]*) echo "run_scaling.sh: --steps needs a number" >&2; exit 2 ;; esac
[ "$steps" -ge 30 ] || { echo "run_scaling.sh: --steps must be at least 30" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tp-scaling.XXXXXX")
trap 'rm -rf "$work"' EXIT

# median_rate CSV: the median images_per_sec over the training rows after the first.
median_rate() {
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
             $col["phase"] == "train" && $col["images_per_sec"] != "" {
                 if (seen++) r[n++] = $col["images_per_sec"] + 0 }
             END {
                 if (n == 0) { print "nan"; exit }
                 for (i = 0; i < n; i++) for (j = i + 1; j < n; j++)
                     if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
                 print (n % 2) ? r[int(n / 2)] : (r[n / 2 - 1] + r[n / 2]) / 2 }' "$1"
}

table="$work/table"
printf '%-6s %14s %14s %11s\n' ranks "images/s" "per rank" efficiency > "$table"
base=
for n in $ranks; do
    run="$work/run$n"
    if [ "$use_mpirun" = 1 ]; then
        launch="mpirun -np $n --bind-to none"
        gpus=1
    else
        launch=
        gpus=$n
    fi
    echo "== $n rank(s)" >&2
    # shellcheck disable=SC2086
    if ! $launch "$trainpipe" -q train "$config" "$@" --set pipeline.run_dir="$run" \
        --set pipeline.gpus="$gpus" --set pipeline.steps="$steps" \
        --set pipeline.log_every_steps=10 --set pipeline.eval_every_epochs=0 \
        --set pipeline.eval_every_steps=0 --set checkpoint.every_steps=0 \
        --set checkpoint.every_epochs=0 --set logger.csv.file=metrics.csv \
        > "$work/log$n" 2>&1; then
        tail -5 "$work/log$n" >&2
        printf '%-6s %14s\n' "$n" "failed" >> "$table"
        continue
    fi
    rate=$(median_rate "$run/metrics.csv")
    [ -n "$base" ] || base=$rate
    awk -v n="$n" -v r="$rate" -v b="$base" 'BEGIN {
        printf "%-6d %14.1f %14.1f %10.1f%%\n", n, r, r / n, 100 * r / (n * b) }' >> "$table"
done
cat "$table"
[ -z "$out" ] || cp "$table" "$out"
