#!/bin/sh
# Downloads CIFAR-10 and CIFAR-100 (python and binary versions) from the official site,
# checks the published MD5 sums and unpacks them.
#
#   fetch-cifar.sh [-d TARGET_DIR] [-k] [WHICH...]
#
# WHICH: cifar-10-python cifar-10-binary cifar-100-python cifar-100-binary (default: all).
# TARGET_DIR (default ./data) receives cifar-10-batches-py, cifar-10-batches-bin,
# cifar-100-python and cifar-100-binary, the folders trainpipe's cifar and cifar_bin sources
# read. Archives already present with the right checksum are not downloaded again; -k keeps
# the archives after unpacking. Needs curl or wget, md5sum and tar.
#
# Exit status: 0 done, 1 a checksum or unpacking failure, 2 usage, 3 no network.
set -eu

base_url=${CIFAR_URL:-https://www.cs.toronto.edu/~kriz}
target=./data
keep=0

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "$0"
    exit 2
}

while getopts "d:kh" opt; do
    case $opt in
        d) target=$OPTARG ;;
        k) keep=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- cifar-10-python cifar-10-binary cifar-100-python cifar-100-binary

# The archive name, its MD5 (as published on the CIFAR page) and the folder it unpacks to.
info() {
    case $1 in
        cifar-10-python) echo "cifar-10-python.tar.gz c58f30108f718f92721af3b95e74349a cifar-10-batches-py" ;;
        cifar-10-binary) echo "cifar-10-binary.tar.gz c32a1d4ab5d03f1284b67883e8d87530 cifar-10-batches-bin" ;;
        cifar-100-python) echo "cifar-100-python.tar.gz eb9058c3a382ffc7106e4002c42a8d85 cifar-100-python" ;;
        cifar-100-binary) echo "cifar-100-binary.tar.gz 03b5dce01913d631647c71ecec9e9cb8 cifar-100-binary" ;;
        *) return 1 ;;
    esac
}

for which in "$@"; do
    info "$which" > /dev/null || { echo "fetch-cifar: unknown dataset '$which'" >&2; usage; }
done

if command -v curl > /dev/null 2>&1; then
    fetch() { curl -fL --retry 2 --connect-timeout 15 -o "$2" "$1"; }
    probe() { curl -fsI --connect-timeout 10 "$1" > /dev/null 2>&1; }
elif command -v wget > /dev/null 2>&1; then
    fetch() { wget -q --tries=2 --timeout=15 -O "$2" "$1"; }
    probe() { wget -q --spider --tries=1 --timeout=10 "$1" > /dev/null 2>&1; }
else
    echo "fetch-cifar: neither curl nor wget is installed" >&2
    exit 1
fi

md5_of() { md5sum "$1" | cut -d' ' -f1; }

checked_network=0
for which in "$@"; do
    line=$(info "$which")
    archive=$(echo "$line" | cut -d' ' -f1)
    sum=$(echo "$line" | cut -d' ' -f2)
    folder=$(echo "$line" | cut -d' ' -f3)
    file="$target/$archive"
    if [ -f "$file" ] && [ "$(md5_of "$file")" = "$sum" ]; then
        echo "fetch-cifar: $file already downloaded"
    else
        if [ $checked_network = 0 ]; then
            if ! probe "$base_url/$archive"; then
                echo "fetch-cifar: cannot reach $base_url (no network?); nothing downloaded" >&2
                exit 3
            fi
            checked_network=1
        fi
        mkdir -p "$target"
        echo "fetch-cifar: downloading $base_url/$archive"
        rm -f "$file.part"
        if ! fetch "$base_url/$archive" "$file.part"; then
            rm -f "$file.part"
            echo "fetch-cifar: download of $archive failed" >&2
            exit 3
        fi
        got=$(md5_of "$file.part")
        if [ "$got" != "$sum" ]; then
            rm -f "$file.part"
            echo "fetch-cifar: $archive has MD5 $got, expected $sum; removed" >&2
            exit 1
        fi
        mv "$file.part" "$file"
    fi
    echo "fetch-cifar: MD5 $sum ok; unpacking into $target/$folder"
    if ! tar -xzf "$file" -C "$target"; then
        echo "fetch-cifar: cannot unpack $file" >&2
        exit 1
    fi
    [ -d "$target/$folder" ] || { echo "fetch-cifar: $file did not contain $folder" >&2; exit 1; }
    [ $keep = 1 ] || rm -f "$file"
done
echo "fetch-cifar: done; point the cifar source at $target/cifar-10-batches-py (or the others)"
