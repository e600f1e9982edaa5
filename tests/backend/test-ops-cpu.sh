#!/bin/sh
# Runs the backend operation tests on backend-cpu (must pass): on the CPU's own instruction
# set, then with oneDNN (and backend-cpu's own vectorised loops, which follow it) held to
# AVX2 and to SSE4.1, so that every instantiation of those loops runs here.
ops="${TP_BUILDDIR:-..}/tests/backend/test_ops"
"$ops" cpu || exit 1
for isa in AVX2 SSE41; do
    echo "== ONEDNN_MAX_CPU_ISA=$isa"
    ONEDNN_MAX_CPU_ISA=$isa "$ops" cpu || exit 1
done
