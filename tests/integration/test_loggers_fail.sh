#!/bin/sh
# Logger failures: an unwritable directory, a full disk, a directory removed mid-run. Each
# failure is one clear stderr line naming the path and the system's reason.
set -u
drv="$TP_BUILDDIR/tests/integration/test_loggers"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_loggers_fail.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }

echo "== unwritable directory"
"$drv" fail-dir "$tmp" 2> "$tmp/err1" || fail "driver reported a failed expectation"
cat "$tmp/err1"
[ "$(wc -l < "$tmp/err1" | tr -d ' ')" = 2 ] || fail "expected exactly one error line per logger"
grep -q "^trainpipe: error: logger tensorboard: .*not-a-directory.*: Not a directory\$" "$tmp/err1" ||
    fail "tensorboard error line"
grep -q "^trainpipe: error: logger csv: .*not-a-directory/metrics.csv.*: Not a directory\$" "$tmp/err1" ||
    fail "csv error line"

echo "== disk full, file-size limit, removed directory"
"$drv" fail-write "$tmp" 2> "$tmp/err2" || fail "driver reported a failed expectation"
cat "$tmp/err2"
[ "$(grep -c '^trainpipe: error: logger ' "$tmp/err2")" = 3 ] || fail "expected three error lines"
[ "$(grep -vc '^trainpipe: error: logger ' "$tmp/err2")" = 0 ] || fail "unexpected stderr output"

echo "== resuming onto a CSV with another header"
mkdir "$tmp/foreign" || exit 1
"$drv" fail-header "$tmp/foreign" 2> "$tmp/err3" || fail "driver reported a failed expectation"
cat "$tmp/err3"
[ "$(wc -l < "$tmp/err3" | tr -d ' ')" = 1 ] || fail "expected exactly one error line"

[ $bad = 0 ] && echo PASS
exit $bad
