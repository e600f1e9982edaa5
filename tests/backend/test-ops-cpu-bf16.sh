#!/bin/sh
# Runs the backend operation tests on backend-cpu with precision=bf16: the f32 rows as in
# test-ops-cpu.sh, plus the bf16 activation rows (test_bf16_activations in test_ops.c).
# On a CPU without AVX-512 BF16 the backend must refuse that precision with its one-line
# error; the test then checks that refusal and is skipped (exit 77), as the rows cannot run.
ops="${TP_BUILDDIR:-..}/tests/backend/test_ops"
if ! grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null; then
    out=$("$ops" cpu precision=bf16 2>&1)
    rc=$?
    echo "$out"
    if [ $rc -ne 0 ] && echo "$out" | grep -q "precision = bf16 needs a CPU with AVX-512 BF16"; then
        echo "this CPU has no AVX-512 BF16: the refusal is right, the bf16 rows cannot run here"
        exit 77
    fi
    echo "FAIL: expected backend-cpu to refuse precision = bf16 on this CPU"
    exit 1
fi
exec "$ops" cpu precision=bf16
