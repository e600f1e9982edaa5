#!/bin/sh
# Builds and runs every libFuzzer target tests/fuzz/fuzz_*.c for SECONDS each (default 30).
#
#   tests/fuzz/run-fuzzers.sh [SECONDS] [NAME...]     (NAME: e.g. fuzz_pickle; default all)
#
# A target declares in comments among its first 15 lines what to build it with (paths are
# relative to the repository root; all but fuzz-sources are optional):
#   // fuzz-sources: plugins/foo/parser.c plugins/foo/util.c
#   // fuzz-cflags: -Iplugins/foo -Isdk -DSOMETHING
#   // fuzz-ldflags: -lz
#   // fuzz-seeds: plugins/foo/fixtures tests/fuzz/seeds/foo   (folders or files)
# Each target is compiled with clang -fsanitize=fuzzer,address,undefined (UBSan fatal) and
# run from a copy of its seeds, so committed seeds never change. Leak detection is on.
#
# Exits 0 when every target built and ran clean, 1 on any build failure, crash, leak or
# timeout (the crashing input is kept next to the log), 77 when clang's libFuzzer is missing
# (Debian: apt-get install clang libclang-rt-14-dev, or the clang-N matching your clang).
# Environment: CC_FUZZ (default clang), FUZZ_WORKDIR (default a new /tmp/tp-fuzz-XXXXXX),
# FUZZ_JOBS_FLAGS (extra libFuzzer flags, e.g. "-max_len=65536").
set -u

secs=${1:-30}
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS] [fuzz_NAME...]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift

top=$(cd "$(dirname "$0")/../.." && pwd)
cc=${CC_FUZZ:-clang}
work=${FUZZ_WORKDIR:-$(mktemp -d /tmp/tp-fuzz-XXXXXX)}
mkdir -p "$work"

# libFuzzer present?
probe="$work/probe.c"
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    > "$probe"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe" -o "$work/probe" 2> "$work/probe.log"; then
    echo "run-fuzzers: $cc cannot build libFuzzer targets (install clang and libclang-rt-dev); see $work/probe.log"
    exit 77
fi

# The value of "// fuzz-KEY:" in the first 15 lines of a file.
directive() {
    sed -n "1,15s|^// fuzz-$1:[[:space:]]*||p" "$2" | head -n 1
}

targets=
if [ $# -gt 0 ]; then
    for n in "$@"; do targets="$targets $top/tests/fuzz/${n%.c}.c"; done
else
    targets=$(ls "$top"/tests/fuzz/fuzz_*.c 2> /dev/null)
fi
[ -n "$targets" ] || { echo "run-fuzzers: no tests/fuzz/fuzz_*.c"; exit 1; }

failed=0
for src in $targets; do
    name=$(basename "$src" .c)
    if [ ! -f "$src" ]; then
        echo "FAIL $name: no such target"; failed=1; continue
    fi
    sources=$(directive sources "$src")
    cflags=$(directive cflags "$src")
    ldflags=$(directive ldflags "$src")
    seeds=$(directive seeds "$src")
    bin="$work/$name"
    # Word splitting of the directive values is intended: they are lists.
    # shellcheck disable=SC2086
    if ! (cd "$top" && "$cc" -g -O1 -fno-omit-frame-pointer \
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
            $cflags "tests/fuzz/$name.c" $sources -o "$bin" $ldflags) \
            > "$work/$name.build.log" 2>&1; then
        echo "FAIL $name: does not build (sources: $sources)"
        sed 's/^/    /' "$work/$name.build.log" | tail -n 20
        failed=1
        continue
    fi

    corpus="$work/$name.corpus"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    for s in $seeds; do
        if [ -d "$top/$s" ]; then
            for f in "$top/$s"/*; do
                [ -f "$f" ] && cp "$f" "$corpus/$(echo "$s" | tr '/' '_')_$(basename "$f")"
            done
        elif [ -f "$top/$s" ]; then
            cp "$top/$s" "$corpus/"
        else
            echo "note $name: seed $s not found"
        fi
    done
    n_seeds=$(find "$corpus" -type f | wc -l)

    log="$work/$name.log"
    # shellcheck disable=SC2086
    (cd "$work" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$name-" ${FUZZ_JOBS_FLAGS:-} "$corpus") > "$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        echo "FAIL $name: libFuzzer exited $rc after ${runs:-?} runs (log: $log)"
        grep -E 'ERROR|SUMMARY|Test unit written|leak' "$log" | head -n 10 | sed 's/^/    /'
        failed=1
    else
        echo "ok   $name: ${runs:-?} runs in ${secs}s, $cov, $n_seeds seeds, corpus now $(find "$corpus" -type f | wc -l) (log: $log)"
    fi
done
exit $failed
