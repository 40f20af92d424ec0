# Sourced by bench.sh and train_demo.sh: moves to the repository root and, on a machine
# without network that lacks them, installs the wheels benchmarks/gpu/wheels.sh put in
# .whl/ (into /tmp/videojax_site, put on PYTHONPATH for this process and its children).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python3}"
if [[ -d .whl ]] && ! "$PYTHON" -c "import ml_collections, grain, tensorflow_datasets" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/videojax_site .whl/*.whl
  export PYTHONPATH="/tmp/videojax_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
