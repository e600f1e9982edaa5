#!/bin/bash
# Builds trainpipe with backend-cuda on this (GPU-less) machine and copies into .gpu-bundle/
# (repository root, ignored by git) everything run_gpu_bench.sh needs on the GPU machine,
# which has the CUDA driver and NVIDIA's libraries but none of Debian's development packages
# and no network. See tests/bench/gpu/README.md.
#
#   tests/bench/gpu/bundle.sh            (from the repository root)
#
# The bundle keeps the build tree's relative layout, so TP_BUILDDIR=.gpu-bundle works for
# the test scripts:
#   host/trainpipe
#   plugins/.libs/*.so        every plugin (the build tree's plugins/.libs holds them all)
#   tests/bench/bench_backend, tests/backend/test_ops, tests/host/test_comm,
#   tests/integration/model_logits, plugins/backend-cuda/test_cuda_load
#   lib/                      the shared libraries from Debian these load (oneDNN, inih,
#                             lz4, turbojpeg, Open MPI, ...), except the C library family,
#                             the C++ runtime and the CUDA libraries, which the GPU machine
#                             has (see EXCLUDE below); those over 2 MiB (oneDNN) as NAME.xz
#   MANIFEST.txt              what was built from what, and every file with its size
#
# Environment:
#   CUDA_HOME        CUDA toolkit to build against (default /usr/local/cuda)
#   TP_GPU_BUILDDIR  reuse (or create) this build directory instead of a temporary one
#                    that is deleted afterwards; never inside the source tree
#   MAKE_JOBS        parallel make jobs (default: the number of cores)
#   TP_GPU_BUNDLE_MAX_MIB  size limit (default 45: the device tool carries 64 MiB in all)
# Exit status: 0 bundle written; 1 build or check failed; 2 usage.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../.." && pwd)
cuda=${CUDA_HOME:-/usr/local/cuda}
jobs=${MAKE_JOBS:-$(nproc)}
max_mib=${TP_GPU_BUNDLE_MAX_MIB:-45}
bundle="$top/.gpu-bundle"

die() { echo "bundle.sh: $*" >&2; exit 1; }

[ $# -eq 0 ] || { echo "usage: tests/bench/gpu/bundle.sh (no arguments; see the header)" >&2; exit 2; }
[ -x "$cuda/bin/nvcc" ] || die "no nvcc under $cuda (set CUDA_HOME)"
# A source tree configured in place (an ordinary `./configure && make`) refuses out-of-tree
# builds, so then the build runs on a copy of its working tree (tracked files and untracked
# ones git does not ignore), made under the build directory.
copy_source=0
if [ -e "$top/config.status" ]; then
    copy_source=1
elif [ ! -x "$top/configure" ]; then
    die "$top/configure is missing: run 'autoreconf -fi' in $top first"
fi

# --------------------------------------------------------------------------- build
if [ -n "${TP_GPU_BUILDDIR:-}" ]; then
    build=$TP_GPU_BUILDDIR
    case "$(cd "$(dirname "$build")" 2>/dev/null && pwd)/" in
        "$top"/*) die "TP_GPU_BUILDDIR must lie outside the source tree" ;;
    esac
    mkdir -p "$build"
    build=$(cd "$build" && pwd)
else
    build=$(mktemp -d "${TMPDIR:-/tmp}/trainpipe-gpu-build.XXXXXX")
    scratch=$build
    trap 'rm -rf "$scratch"' EXIT
fi
src=$top
if [ "$copy_source" = 1 ]; then
    src=$build/source
    echo "== $top is configured in place: building a copy of its working tree ($src)"
    mkdir -p "$src"
    # tar keeps the files' times, so a reused copy rebuilds only what changed.
    (cd "$top" && git ls-files -co --exclude-standard -z | xargs -0 tar cf -) |
        (cd "$src" && tar xf -) || die "cannot copy the working tree of $top"
    if [ ! -x "$src/configure" ]; then
        (cd "$src" && autoreconf -fi) > "$build/autoreconf.log" 2>&1 ||
            die "autoreconf failed in the copy (log: $build/autoreconf.log)"
    fi
    build=$build/obj
    mkdir -p "$build"
fi
echo "== build in $build (CUDA $cuda, make -j$jobs)"
cd "$build"
if [ ! -f config.status ]; then
    # No sanitizers: the bundle is for timing. NVCC_ARCH stays configure's default
    # (sm_90 + sm_80), which covers the H100.
    "$src/configure" --with-cuda="$cuda" > configure.log 2>&1 ||
        { tail -30 configure.log; die "configure failed (log: $build/configure.log)"; }
fi
sed -n '/configured$/,$p' configure.log 2>/dev/null || true
grep -q 'backend-cuda \.* yes' configure.log ||
    die "configure will not build backend-cuda (see the summary above)"
grep -q 'NCCL \.* yes' configure.log ||
    echo "bundle.sh: warning: this build has no NCCL; the 1-GPU NCCL check will fail" >&2

make -j"$jobs" > make.log 2>&1 || { tail -40 make.log; die "make failed (log: $build/make.log)"; }
# The programs the GPU run needs beyond `all` (check and bench programs are built on demand).
make -j"$jobs" -C tests bench/bench_backend backend/test_ops host/test_comm \
    integration/model_logits >> make.log 2>&1 ||
    { tail -40 make.log; die "building the test programs failed"; }
make -C plugins backend-cuda/test_cuda_load >> make.log 2>&1 ||
    { tail -40 make.log; die "building test_cuda_load failed"; }

# --------------------------------------------------------------------------- copy
programs="host/trainpipe tests/bench/bench_backend tests/backend/test_ops tests/host/test_comm
          tests/integration/model_logits plugins/backend-cuda/test_cuda_load"
rm -rf "$bundle"
mkdir -p "$bundle/lib" "$bundle/plugins/.libs"
for p in $programs; do
    # libtool leaves a wrapper script in place of a program that links a shared library of
    # the tree; these programs link the host statically, so each must be the real ELF file.
    file -L "$p" | grep -q 'ELF 64-bit' || die "$p is not an ELF program (a libtool wrapper?)"
    mkdir -p "$bundle/$(dirname "$p")"
    cp "$p" "$bundle/$p"
done
nplugins=0
for so in plugins/.libs/*.so; do
    [ -e "$so" ] || continue
    cp "$so" "$bundle/plugins/.libs/"
    nplugins=$((nplugins + 1))
done
[ -e "$bundle/plugins/.libs/backend-cuda.so" ] || die "backend-cuda.so was not built"
[ -e "$bundle/plugins/.libs/backend-cpu.so" ] || die "backend-cpu.so was not built"

# Libraries the GPU machine has, or must provide itself: the C library family, the C++
# runtime (its own is newer than Debian 12's), the kernel's vDSO, and the CUDA libraries,
# which come from the driver (libcuda) and NVIDIA's pip packages there (run_gpu_bench.sh
# puts those on LD_LIBRARY_PATH).
EXCLUDE='^(linux-vdso\.so|ld-linux[^ ]*|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libgcc_s\.so|libstdc\+\+\.so|libcuda\.so|libcudart\.so|libcudnn[a-z_]*\.so|libcublas(Lt)?\.so|libnccl\.so|libnvrtc[-a-z0-9_.]*\.so|libnvJitLink\.so)'

elfs=$(cd "$bundle" && find . -path ./lib -prune -o -type f -print | sed 's|^\./||' | sort)
needed=$(cd "$bundle" && for f in $elfs; do ldd "$f"; done |
         awk '$2 == "=>" {print $1, $3}' | sort -u)
missing=$(printf '%s\n' "$needed" | awk '$2 == "not" {print $1}' | grep -Ev "$EXCLUDE" || true)
[ -z "$missing" ] || die "unresolved here, cannot be carried: $missing"
printf '%s\n' "$needed" | while read -r name path; do
    [ -n "$name" ] || continue
    if printf '%s\n' "$name" | grep -Eq "$EXCLUDE"; then
        continue
    fi
    cp -L "$path" "$bundle/lib/$name"
done

# --------------------------------------------------------------------------- strip, check
for f in $(cd "$bundle" && find . -type f | sed 's|^\./||'); do
    chmod u+w "$bundle/$f"
    strip --strip-unneeded "$bundle/$f" || die "strip $f failed"
done

# Every carried ELF, loaded with the bundle's lib/ first, must find each library either in
# lib/ or on the exclusion list: that is what the GPU machine will be asked for.
bad=0
for f in $elfs $(cd "$bundle" && ls lib/* ); do
    out=$(cd "$bundle" && LD_LIBRARY_PATH="$bundle/lib" ldd "$f")
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        printf '%s\n' "$name" | grep -Eq "$EXCLUDE" && continue
        case "$path" in
            "$bundle/lib/"*) ;;
            *) echo "bundle.sh: $f needs $name, resolved outside the bundle: $path" >&2
               bad=1 ;;
        esac
    done <<< "$out"
done
[ "$bad" = 0 ] || die "the carried libraries are incomplete"

# oneDNN alone is 38 MiB, nearly the whole budget: libraries over 2 MiB travel xz-compressed
# (NAME.xz) and run_gpu_bench.sh unpacks them into a scratch folder on the GPU machine.
for f in "$bundle"/lib/*; do
    if [ "$(stat -c %s "$f")" -gt 2097152 ]; then
        xz -T0 -6 "$f" || die "xz $f failed"
    fi
done

# --------------------------------------------------------------------------- manifest
{
    echo "trainpipe GPU bundle, built $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n)"
    echo "source: $top, commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')" \
         "($(git -C "$top" status --porcelain 2>/dev/null | wc -l) files modified or untracked)"
    echo "CUDA toolkit: $("$cuda/bin/nvcc" --version | tail -2 | head -1)"
    echo "the GPU machine must provide: $(printf '%s\n' "$needed" | awk '{print $1}' |
          grep -E "$EXCLUDE" | grep -Ev '^(linux-vdso|ld-linux)' | tr '\n' ' ')"
    # (xz-compressed libraries are read through xz: oneDNN's needs are below the others')
    echo "newest glibc symbol version needed: $(cd "$bundle" && find . -type f ! -name '*.xz' \
          ! -name MANIFEST.txt -exec objdump -T {} + 2>/dev/null |
          grep -oE 'GLIBC_2\.[0-9]+' | sort -t. -k2,2n -u | tail -1)"
    echo
    sed -n '/configured$/,$p' "$build/configure.log"
    echo "files:"
    (cd "$bundle" && find . -type f ! -name MANIFEST.txt -printf '%10s  %P\n' | sort -k2)
} > "$bundle/MANIFEST.txt"

bytes=$(du -sb "$bundle" | cut -f1)
echo "== $bundle: $nplugins plugins, $(echo "$elfs" | wc -w) programs and plugins," \
     "$(find "$bundle/lib" -type f | wc -l) libraries"
(cd "$bundle" && find . -type f -printf '%10s  %P\n' | sort -k2)
awk -v b="$bytes" -v m="$max_mib" 'BEGIN {
    printf "bundle size: %.1f MiB (limit %d MiB)\n", b / 1048576, m; exit !(b <= m * 1048576) }' ||
    die "the bundle is larger than $max_mib MiB: it would not travel with the working tree"
