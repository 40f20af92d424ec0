#!/usr/bin/env bash
# Runs benchmarks/gpu/bench.py (see its docstring) from the repository root; on a machine
# without network, first installs the wheels that benchmarks/gpu/wheels.sh put in .whl/.
#
#   benchmarks/gpu/bench.sh [--dry_run] [flags of bench.py]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if [[ -d .whl ]] && ! "$PYTHON" -c "import ml_collections, grain, tensorflow_datasets" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/videojax_site .whl/*.whl
  export PYTHONPATH="/tmp/videojax_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu.bench "$@"
