#!/bin/sh
# Installs what trainpipe needs to build and test on Debian 12, by package name.
#   sudo share/scripts/install-deps.sh          build and test dependencies
#   sudo share/scripts/install-deps.sh --dev    also the fuzzing toolchain (clang, libFuzzer),
#                                               the static analyzer (clang-tools)
#                                               and PyTorch (the export test, `make bench`)
# CUDA, cuDNN, cuBLAS and NCCL are not Debian packages: install NVIDIA's toolkit under
# /usr/local/cuda (or pass --with-cuda=DIR to configure); without it backend-cuda is skipped.
set -eu
packages="build-essential autoconf automake libtool autoconf-archive pkg-config
  libinih-dev liblz4-dev zlib1g-dev libdnnl-dev libjpeg62-turbo-dev libturbojpeg0-dev
  libprotobuf-c-dev protobuf-c-compiler dataset-fashion-mnist gnuplot-nox
  python3 python3-numpy python3-pip tmux
  openmpi-bin libopenmpi-dev"
if [ "${1:-}" = "--dev" ]; then
    packages="$packages clang clang-tools libclang-rt-14-dev llvm python3-torch python3-torchvision"
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages
