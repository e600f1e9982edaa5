#!/bin/sh
# `trainpipe plot`: usage errors, the gnuplot-missing message, PNG and SVG output from a
# run's metrics.csv (in a directory whose name needs quoting).
set -u
drv="$TP_BUILDDIR/tests/integration/test_loggers"
plot="$TP_BUILDDIR/tests/integration/test_loggers_plot"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_loggers_plot.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }

run="$tmp/it's a \$(run)"
mkdir "$run" || exit 1
"$drv" train "$run" 1000 0 >/dev/null 2>&1 || { echo "FAIL: driver"; exit 1; }

"$plot" plot >/dev/null 2>&1; [ $? = 2 ] || fail "no run directory: expected exit 2"
"$plot" plot "$run" -o "$tmp/x.jpg" >/dev/null 2>&1; [ $? = 2 ] || fail ".jpg: expected exit 2"
"$plot" plot "$run" --bogus >/dev/null 2>&1; [ $? = 2 ] || fail "unknown option: expected exit 2"
"$plot" plot "$tmp/nowhere" >/dev/null 2>"$tmp/err"; [ $? = 1 ] || fail "missing CSV: expected exit 1"

PATH=/nonexistent "$plot" plot "$run" > /dev/null 2> "$tmp/err"; rc=$?
[ $rc = 1 ] || fail "no gnuplot: exit status $rc, expected 1"
[ "$(cat "$tmp/err")" = "gnuplot not found: install the Debian package gnuplot-nox" ] ||
    fail "no gnuplot: message was: $(cat "$tmp/err")"

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "SKIP: gnuplot is not installed (Debian package gnuplot-nox)"
    [ $bad = 0 ] && exit 77 || exit 1
fi

"$plot" plot "$run" || fail "PNG plot failed"
png="$run/curves.png"
if [ -f "$png" ]; then
    # Signature, then IHDR width and height (big-endian) at bytes 16..23.
    sig=$(od -An -tx1 -N8 "$png" | tr -d ' \n')
    [ "$sig" = 89504e470d0a1a0a ] || fail "curves.png: not a PNG ($sig)"
    size=$(od -An -tu1 -j16 -N8 "$png" | awk '{print $3*256+$4 "x" $7*256+$8}')
    echo "curves.png: $size, $(wc -c < "$png" | tr -d ' ') bytes"
    [ "$size" = 900x940 ] || fail "curves.png is $size, expected 900x940"
else
    fail "no curves.png"
fi
"$plot" plot "$run" -o "$tmp/curves.svg" || fail "SVG plot failed"
grep -q '<svg' "$tmp/curves.svg" 2>/dev/null || fail "curves.svg is not SVG"
grep -q 'validation' "$tmp/curves.svg" 2>/dev/null || fail "curves.svg has no validation key"
ls "$run" | grep -q tmp && fail "temporary file left in the run directory"

[ $bad = 0 ] && echo PASS
exit $bad
