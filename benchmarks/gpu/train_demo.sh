#!/usr/bin/env bash
# Runs benchmarks/gpu/train_demo.py (see its docstring) from the repository root, with the
# carried wheels installed where the machine lacks them (_env.sh).
#
#   benchmarks/gpu/train_demo.sh [--dry_run] [flags of train_demo.py]
source "$(dirname "$0")/_env.sh"
exec "$PYTHON" -m benchmarks.gpu.train_demo "$@"
