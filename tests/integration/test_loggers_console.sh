#!/bin/sh
# Console logger: piped output is plain lines without a single control character; on a
# terminal (under script(1), or tmux) progress is redrawn in place with \r and ESC[2K.
set -u
drv="$TP_BUILDDIR/tests/integration/test_loggers"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_loggers_console.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0
fail() { echo "FAIL: $*"; bad=1; }

# Bytes other than LF and printable ASCII.
controls() { LC_ALL=C tr -d '\n -~' < "$1" | wc -c | tr -d ' '; }

echo "== piped (200 steps of 0.5 s, interval_secs=10)"
"$drv" console 200 interval_secs=10 > "$tmp/piped.txt" || fail "driver exit status"
cat "$tmp/piped.txt"
[ "$(controls "$tmp/piped.txt")" = 0 ] || fail "control characters in piped output"
n=$(grep -c '^epoch ' "$tmp/piped.txt")
# 100 s of run time, a line every 10 s after the first step: 9 lines.
[ "$n" -ge 8 ] && [ "$n" -le 10 ] || fail "$n progress lines, expected 9"
[ "$(grep -c '^validation at step' "$tmp/piped.txt")" = 4 ] || fail "validation lines"
grep -q '^finished at step 200/200' "$tmp/piped.txt" || fail "no closing summary"
grep -q 'odd?\[31mtag' "$tmp/piped.txt" || fail "hostile tag not neutralised"

echo "== piped, quiet"
"$drv" console 200 quiet=true > "$tmp/quiet.txt" || fail "driver exit status"
cat "$tmp/quiet.txt"
[ "$(controls "$tmp/quiet.txt")" = 0 ] || fail "control characters in quiet output"
[ "$(wc -l < "$tmp/quiet.txt" | tr -d ' ')" = 5 ] || fail "quiet: expected 4 validation lines and a summary"
grep -q '^epoch ' "$tmp/quiet.txt" && fail "quiet printed progress"

echo "== terminal"
quoted=$(printf "'%s'" "$(printf %s "$drv" | sed "s/'/'\\\\''/g")")
if command -v script >/dev/null 2>&1 &&
   script -qfec "true" /dev/null </dev/null >/dev/null 2>&1; then
    TERM=xterm script -qfec "stty cols 120 rows 30; $quoted console 200" /dev/null \
        </dev/null > "$tmp/tty.txt" 2>&1 || fail "driver under script"
    # 80 columns: the bar and the learning rate give way; loss and error stay on the row.
    TERM=xterm script -qfec "stty cols 80 rows 30; $quoted console 200" /dev/null \
        </dev/null > "$tmp/tty80.txt" 2>&1 || fail "driver under script (80 columns)"
elif command -v tmux >/dev/null 2>&1; then
    # The pane runs the driver on its terminal; pipe-pane copies the raw bytes to a file.
    sock="$tmp/tmux.sock"
    tmux -S "$sock" new-session -d -x 120 -y 30 \
        "sleep 0.5; $quoted console 200; tmux -S '$sock' wait-for -S done; sleep 1" ||
        fail "tmux"
    tmux -S "$sock" pipe-pane -o "cat > '$tmp/tty.txt'"
    tmux -S "$sock" wait-for done
    tmux -S "$sock" kill-server 2>/dev/null
else
    echo "SKIP: neither script(1) nor tmux to give the logger a terminal"
    [ $bad = 0 ] && exit 77 || exit 1
fi
redraws=$(LC_ALL=C grep -o "$(printf '\r\033')\[2K" "$tmp/tty.txt" | wc -l | tr -d ' ')
echo "terminal: $redraws in-place redraws"
[ "$redraws" -ge 3 ] || fail "expected in-place redraws on a terminal"
LC_ALL=C grep -q "$(printf '\r\033')\[2Kepoch 5/4  step 200/200 \[" "$tmp/tty.txt" ||
    fail "final progress line with bar not drawn"
grep -q 'finished at step 200/200' "$tmp/tty.txt" || fail "no closing summary on the terminal"
if [ -f "$tmp/tty80.txt" ]; then
    # every redrawn row fits in 79 columns and still shows the loss and the error
    LC_ALL=C tr '\r' '\n' < "$tmp/tty80.txt" | LC_ALL=C sed -n 's/^\x1b\[2K//p' > "$tmp/rows80.txt"
    longest=$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$tmp/rows80.txt")
    last=$(grep '^epoch .*step 200/200' "$tmp/rows80.txt" | tail -1)
    echo "80 columns: longest row $longest, last: $last"
    [ "$longest" -ge 40 ] && [ "$longest" -le 79 ] || fail "80 columns: a row of $longest characters"
    case $last in *"loss "*"err "*) ;; *) fail "80 columns: loss and error cut off" ;; esac
fi

[ $bad = 0 ] && echo PASS
exit $bad
