#!/bin/sh
# Runs the backend operation tests on backend-cpu (must pass).
exec "${TP_BUILDDIR:-..}/tests/backend/test_ops" cpu
