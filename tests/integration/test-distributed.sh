#!/bin/sh
# Data-parallel training end to end: 2 ranks of batch B/2 end, after K steps, with the
# weights of one process of batch B, within 1e-5 relative (per tensor: max |a - b| over
# max |b|). Runs the 2 ranks under the local launcher (`pipeline.gpus=2`, CPU backend) and,
# when mpirun and an MPI build are there, under `mpirun -np 2 --oversubscribe`.
#
# Batch normalisation must use the global batch's statistics for the weights to agree
# (with per-rank statistics they differ, as in PyTorch), hence sync_batchnorm = true
# (DIST_BN="" leaves it out).
#   DIST_STEPS (default 6), DIST_BATCH (global batch, default 32) and DIST_SETTINGS (more
#   --set arguments) change the run.
set -u
TRAINPIPE="${TP_BUILDDIR:?}/host/trainpipe"
CONF="${TP_TOP_SRCDIR:?}/tests/integration/train-tiny.ini"
steps=${DIST_STEPS:-6}
batch=${DIST_BATCH:-32}
half=$((batch / 2))
work=$(mktemp -d "${TMPDIR:-/tmp}/tp-test-distributed.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK PMI_RANK TRAINPIPE_WORLD_SIZE TRAINPIPE_COMM

bn=${DIST_BN-"--set pipeline.sync_batchnorm=true"}
common="--set pipeline.steps=$steps --set pipeline.eval_every_epochs=0
        --set checkpoint.every_steps=$steps --set backend.threads=1
        $bn ${DIST_SETTINGS:-}"
ckpt=$(printf 'checkpoints/step-%08d.ckpt' "$steps")

# compare A.safetensors B.safetensors: per-tensor relative difference, fails above 1e-5.
compare() {
    python3 - "$1" "$2" <<'PY'
import array, json, struct, sys

def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        code = {"F32": "f", "F64": "d", "I64": "q", "I32": "i"}.get(t["dtype"])
        if not code:
            sys.exit("%s: %s is %s, expected F32, F64, I64 or I32" % (path, name, t["dtype"]))
        a = array.array(code)
        a.frombytes(body[t["data_offsets"][0]:t["data_offsets"][1]])
        out[name] = a
    return out

a, b = load(sys.argv[1]), load(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit("the files hold different tensors")
worst, worst_name = 0.0, ""
for name in sorted(a):
    x, y = a[name], b[name]
    if len(x) != len(y):
        sys.exit("%s: %d vs %d values" % (name, len(x), len(y)))
    scale = max((abs(v) for v in y), default=0.0) or 1.0
    diff = max((abs(p - q) for p, q in zip(x, y)), default=0.0) / scale
    if diff > worst:
        worst, worst_name = diff, name
print("max relative difference over %d tensors: %.3g (%s)" % (len(a), worst, worst_name or "-"))
sys.exit(0 if worst <= 1e-5 else 1)
PY
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
train single "" "--set pipeline.batch_size=$batch" || exit 1

echo "== 2 ranks of batch $half under the local launcher (pipeline.gpus=2)"
if train local "" "--set pipeline.batch_size=$half --set pipeline.gpus=2"; then
    compare "$work/single.safetensors" "$work/local.safetensors" || fail "local launcher: weights differ"
fi

echo "== 2 ranks of batch $half under mpirun"
if [ "$("$TP_BUILDDIR/tests/host/test_comm" features 2>/dev/null)" = "mpi=yes" ] &&
    command -v mpirun > /dev/null 2>&1; then
    mpi="mpirun -np 2"
    if mpirun --version 2>&1 | grep -q "Open MPI"; then
        mpi="$mpi --oversubscribe --bind-to none"
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    if train mpi "$mpi" "--set pipeline.batch_size=$half"; then
        compare "$work/single.safetensors" "$work/mpi.safetensors" || fail "mpirun: weights differ"
    fi
else
    echo "    skipped: no mpirun or a build without MPI"
fi

[ "$bad" = 0 ] && echo "PASS: data-parallel runs match one process"
exit "$bad"
