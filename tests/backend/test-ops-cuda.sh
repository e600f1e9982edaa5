#!/bin/sh
# Runs the backend operation tests on backend-cuda; skips (77) without the plugin or a GPU.
exec "${TP_BUILDDIR:-..}/tests/backend/test_ops" cuda
