#!/usr/bin/env bash
# Runs benchmarks/gpu/bench.py (see its docstring) from the repository root, with the
# carried wheels installed where the machine lacks them (_env.sh).
#
#   benchmarks/gpu/bench.sh [--dry_run] [flags of bench.py]
source "$(dirname "$0")/_env.sh"
exec "$PYTHON" -m benchmarks.gpu.bench "$@"
