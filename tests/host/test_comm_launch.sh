#!/bin/sh
# The local launcher (`gpus = N`) and its socket transport, without MPI: N copies get ranks
# 0..N-1 and their collectives agree with sums computed in the test; a failing copy (an
# abort, a silent exit, a hang) makes the launcher stop the others and exit non-zero with a
# message naming the rank, within the timeout.
set -u
prog="$TP_BUILDDIR/tests/host/test_comm"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_comm_launch.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }
guard=""
command -v timeout > /dev/null 2>&1 && guard="timeout -k 5 90"
# Not under mpirun, whatever the caller's environment says.
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK PMI_RANK TRAINPIPE_WORLD_SIZE TRAINPIPE_COMM

# run NAME N MODE: the launcher with N copies; output in $tmp/NAME, $status, $elapsed.
run() {
    start=$(date +%s)
    $guard "$prog" launch "$2" "$3" > "$tmp/$1" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    sed "s/^/    /" "$tmp/$1"
    echo "    (exit status $status after ${elapsed} s)"
}

for n in 2 3; do
    echo "== collectives on $n local ranks"
    run "basic$n" "$n" basic
    [ "$status" = 0 ] || fail "the $n-rank job failed"
    r=0
    while [ "$r" -lt "$n" ]; do
        grep -q "^rank $r of $n (local rank $r) on the local transport" "$tmp/basic$n" ||
            fail "rank $r of $n did not start"
        grep -q "^rank $r: all comm checks passed" "$tmp/basic$n" || fail "rank $r of $n did not pass"
        r=$((r + 1))
    done
done

echo "== rank 1 calls comm_abort while rank 0 waits in an allreduce (timeout 30 s)"
run abort 2 abort
[ "$status" = 3 ] || fail "expected the launcher to exit with rank 1's status 3"
grep -q "^trainpipe: rank 1: simulated failure" "$tmp/abort" || fail "no message from rank 1"
grep -q "^trainpipe: rank 1 exited with status 3; stopping the other rank" "$tmp/abort" ||
    fail "the launcher did not name rank 1"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s"

echo "== rank 1 exits silently while rank 0 waits in an allreduce (timeout 30 s)"
run die 3 die
[ "$status" = 3 ] || fail "expected the launcher to exit with rank 1's status 3"
grep -q "^trainpipe: rank 1 exited with status 3; stopping the other ranks" "$tmp/die" ||
    fail "the launcher did not name rank 1"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s"

echo "== rank 1 hangs while rank 0 waits in an allreduce (timeout 2 s)"
run hang 2 hang
[ "$status" = 1 ] || fail "expected the launcher to exit with rank 0's status 1"
grep -q "^trainpipe: rank 0: collective allreduce_host timed out after 2 s (a peer rank probably failed)" \
    "$tmp/hang" || fail "no timeout message from rank 0"
grep -q "^trainpipe: rank 0 exited with status 1; stopping the other rank" "$tmp/hang" ||
    fail "the launcher did not name rank 0"
grep -q "nobody stopped this rank" "$tmp/hang" && fail "rank 1 was left running"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s"

echo "== rank 1 hangs while rank 0's communication thread sums a gradient bucket (timeout 2 s)"
run hang_bucket 2 hang_bucket
[ "$status" = 1 ] || fail "expected the launcher to exit with rank 0's status 1"
grep -q "^trainpipe: rank 0: collective allreduce (gradients) timed out after 2 s" \
    "$tmp/hang_bucket" || fail "no timeout message from rank 0's communication thread"
grep -q "nobody stopped this rank" "$tmp/hang_bucket" && fail "rank 1 was left running"
[ "$elapsed" -lt 20 ] || fail "took ${elapsed} s"

[ "$bad" = 0 ] && echo "PASS: local launcher"
exit "$bad"
