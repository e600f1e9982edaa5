#!/bin/sh
# The MPI transport under `mpirun -np 2 --oversubscribe` (CI machines have 2 cores):
# collectives against sums computed in the test, and a failing rank (comm_abort, a silent
# exit, a hang) ends the whole job within its timeout, with a message naming the rank,
# instead of hanging. Skips (77) only without mpirun or without an MPI build.
set -u
prog="$TP_BUILDDIR/tests/host/test_comm"
if [ "$("$prog" features)" != "mpi=yes" ]; then
    echo "SKIP: trainpipe was built without MPI (install libopenmpi-dev and re-run configure)"
    exit 77
fi
if ! command -v mpirun > /dev/null 2>&1; then
    echo "SKIP: mpirun is not on PATH (Debian: apt-get install openmpi-bin)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_comm_mpi.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }

# Open MPI: allow more ranks than cores, do not pin them, and allow root (containers, CI).
launcher="mpirun -np 2"
if mpirun --version 2>&1 | grep -q "Open MPI"; then
    launcher="$launcher --oversubscribe --bind-to none"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_btl_vader_single_copy_mechanism=none # no ptrace rights in containers
fi
# A hung job must not hang the test suite.
guard=""
command -v timeout > /dev/null 2>&1 && guard="timeout -k 5 90"

# run NAME MODE: runs the job, leaves its output in $tmp/NAME, its status in $status and
# its wall time in $elapsed.
run() {
    start=$(date +%s)
    # shellcheck disable=SC2086
    $guard $launcher "$prog" "$2" > "$tmp/$1" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    sed "s/^/    /" "$tmp/$1"
    echo "    (exit status $status after ${elapsed} s)"
}

echo "== collectives on 2 ranks"
run basic basic
[ "$status" = 0 ] || fail "the collectives job failed"
for r in 0 1; do
    grep -q "^rank $r: all comm checks passed" "$tmp/basic" || fail "rank $r did not pass"
done

echo "== rank 1 calls comm_abort while rank 0 waits in an allreduce (timeout 30 s)"
run abort abort
[ "$status" != 0 ] || fail "the job ended with status 0"
[ "$status" != 124 ] || fail "the job hung"
grep -q "trainpipe: rank 1: simulated failure" "$tmp/abort" || fail "no message naming rank 1"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s: the abort did not stop rank 0"

echo "== rank 1 exits silently while rank 0 waits in an allreduce (timeout 30 s)"
run die die
[ "$status" != 0 ] || fail "the job ended with status 0"
[ "$status" != 124 ] || fail "the job hung"
# mpirun names the process: "rank 1" (MPICH) or "[[jobid,1],1]" (Open MPI), or our timeout.
grep -Eq "rank 1|\[\[[0-9]+,[0-9]+\],1\]|rank 0: collective" "$tmp/die" ||
    fail "no message naming a rank"
[ "$elapsed" -lt 45 ] || fail "took ${elapsed} s"

echo "== rank 1 hangs while rank 0 waits in an allreduce (timeout 2 s)"
run hang hang
[ "$status" != 0 ] || fail "the job ended with status 0"
[ "$status" != 124 ] || fail "the job hung"
grep -q "trainpipe: rank 0: collective allreduce_host timed out after 2 s (a peer rank probably failed)" \
    "$tmp/hang" || fail "no timeout message naming rank 0"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s: the 2 s timeout did not fire"

echo "== rank 1 hangs while rank 0's communication thread sums a gradient bucket (timeout 2 s)"
run hang_bucket hang_bucket
[ "$status" != 0 ] || fail "the job ended with status 0"
[ "$status" != 124 ] || fail "the job hung"
grep -q "trainpipe: rank 0: collective allreduce (gradients) timed out after 2 s" \
    "$tmp/hang_bucket" || fail "no timeout message from rank 0's communication thread"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s: the 2 s timeout did not fire"

[ "$bad" = 0 ] && echo "PASS: MPI transport"
exit "$bad"
