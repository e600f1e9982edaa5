#!/bin/sh
# Data-parallel training end to end: 2 ranks of batch B/2 end, after K steps, with the
# weights of one process of batch B, within 1e-5 relative. Runs the 2 ranks under the local
# launcher (`pipeline.gpus=2`, CPU backend) and, when mpirun and an MPI build are there, under
# `mpirun -np 2 --oversubscribe`.
#
# "Relative" is over the model as a whole: max |a - b| over every weight and statistic,
# divided by max |b|. (Per tensor it cannot work: a bias starts at 0 and its gradient is a
# sum that batch norm makes cancel, so float rounding alone moves it by ~1e-3 of itself; one
# process with 2 threads instead of 1 differs from itself by as much. The test prints that
# floor next to the result.) The recipe's chaos amplifies rounding with every step, so K is
# small: 3 steps.
#
# Batch normalisation must use the global batch's statistics for the weights to agree, hence
# sync_batchnorm = true. Gradients summed in small buckets while backward runs (the default
# overlap, over the local sockets and over MPI) must give the very bits of summing them after
# backward: two ranks have one sum order. As a control, per-rank statistics (PyTorch's default) must differ by
# far more than the tolerance, which shows the comparison can see a difference.
#   DIST_STEPS (default 3), DIST_BATCH (global batch, default 32) and DIST_SETTINGS (more
#   --set arguments) change the run.
set -u
TRAINPIPE="${TP_BUILDDIR:?}/host/trainpipe"
CONF="${TP_TOP_SRCDIR:?}/tests/integration/train-tiny.ini"
steps=${DIST_STEPS:-3}
batch=${DIST_BATCH:-32}
half=$((batch / 2))
work=$(mktemp -d "${TMPDIR:-/tmp}/tp-test-distributed.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK PMI_RANK TRAINPIPE_WORLD_SIZE TRAINPIPE_COMM

common="--set pipeline.steps=$steps --set pipeline.eval_every_epochs=0
        --set checkpoint.every_steps=$steps ${DIST_SETTINGS:-}"
sync="--set pipeline.sync_batchnorm=true --set backend.cpu.threads=1"
ckpt=$(printf 'checkpoints/step-%08d.ckpt' "$steps")

# compare A.safetensors B.safetensors [LIMIT]: the model-wide relative difference
# (compare_weights.py); fails when it is above LIMIT (default 1e-5).
compare() {
    result=$(python3 "$TP_TOP_SRCDIR/tests/integration/compare_weights.py" "$1" "$2" \
             --limit "${3:-1e-5}")
    rc=$?
    echo "    $result"
    return $rc
}

# train NAME "LAUNCHER" "SETTINGS": a run into $work/NAME, exported to NAME.safetensors.
train() {
    # shellcheck disable=SC2086
    $2 "$TRAINPIPE" train "$CONF" --set pipeline.run_dir="$work/$1" $common $3 \
        > "$work/$1.log" 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then
        tail -20 "$work/$1.log"
        fail "$1: trainpipe train exited with $rc"
        return 1
    fi
    "$TRAINPIPE" export "$work/$1/$ckpt" "$work/$1.safetensors" > /dev/null 2>&1 ||
        { fail "$1: export of $ckpt failed"; return 1; }
}

echo "== one process, batch $batch, $steps steps"
train single "" "--set pipeline.batch_size=$batch $sync" || exit 1

echo "== the rounding floor: the same process with 2 threads instead of 1"
if train floor "" "--set pipeline.batch_size=$batch --set pipeline.sync_batchnorm=true
                   --set backend.cpu.threads=2"; then
    compare "$work/single.safetensors" "$work/floor.safetensors" 1 || fail "floor: compare failed"
fi

echo "== 2 ranks of batch $half under the local launcher (pipeline.gpus=2)"
if train local "" "--set pipeline.batch_size=$half --set pipeline.gpus=2 $sync"; then
    compare "$work/single.safetensors" "$work/local.safetensors" || fail "local launcher: weights differ"
fi

# buckets NAME: how many buckets the run's log says its gradients travelled in (0: none).
buckets() {
    sed -n 's/.*reduced overlapped (thread) in \([0-9]*\) buckets.*/\1/p' "$work/$1.log" | head -1
}

echo "== overlap: 2 ranks summing 0.01 MB gradient buckets during backward, then after it"
small="env TRAINPIPE_COMM_BUCKET_MB=0.01"
if train overlap "$small" "--set pipeline.batch_size=$half --set pipeline.gpus=2 $sync" &&
    train after "$small" "--set pipeline.batch_size=$half --set pipeline.gpus=2 $sync
                          --set pipeline.overlap_allreduce=false"; then
    n=$(buckets overlap)
    echo "    overlapped run: ${n:-no} buckets; the other: $(grep -o 'reduced after backward' "$work/after.log" | head -1)"
    [ "${n:-0}" -gt 1 ] || fail "overlap: expected several buckets reduced during backward"
    grep -q "reduced after backward" "$work/after.log" ||
        fail "overlap_allreduce = false: the log does not say the gradients were reduced after backward"
    # Each element is the same two-term sum either way: the same bits.
    compare "$work/after.safetensors" "$work/overlap.safetensors" 0 ||
        fail "overlap: weights differ from reducing after backward"
fi

echo "== control: 2 ranks with per-rank batch-norm statistics must differ by more than 1e-3"
if train perrank "" "--set pipeline.batch_size=$half --set pipeline.gpus=2
                     --set backend.cpu.threads=1"; then
    if compare "$work/single.safetensors" "$work/perrank.safetensors" 1e-3; then
        fail "control: per-rank statistics gave the global batch's weights; the test cannot see a difference"
    fi
fi

echo "== 2 ranks of batch $half under mpirun"
if [ "$("$TP_BUILDDIR/tests/host/test_comm" features 2>/dev/null)" = "mpi=yes" ] &&
    command -v mpirun > /dev/null 2>&1; then
    mpi="mpirun -np 2"
    if mpirun --version 2>&1 | grep -q "Open MPI"; then
        mpi="$mpi --oversubscribe --bind-to none"
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    if train mpi "$mpi" "--set pipeline.batch_size=$half $sync"; then
        compare "$work/single.safetensors" "$work/mpi.safetensors" || fail "mpirun: weights differ"
    fi
    echo "== mpirun, 0.01 MB buckets overlapped with backward, against the local launcher"
    if [ -f "$work/after.safetensors" ] &&
        train mpioverlap "$mpi $small" "--set pipeline.batch_size=$half $sync"; then
        n=$(buckets mpioverlap)
        echo "    ${n:-no} buckets reduced during backward over MPI"
        [ "${n:-0}" -gt 1 ] || fail "mpirun overlap: expected several buckets reduced during backward"
        compare "$work/after.safetensors" "$work/mpioverlap.safetensors" 0 ||
            fail "mpirun overlap: weights differ from the local launcher's"
    fi
else
    echo "    skipped: no mpirun or a build without MPI"
fi

[ "$bad" = 0 ] && echo "PASS: data-parallel runs match one process"
exit "$bad"
