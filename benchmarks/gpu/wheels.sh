#!/usr/bin/env bash
# Downloads, into .whl/, the Python 3.12 wheels that the GPU machine lacks (it has jax
# with CUDA, flax, optax, orbax-checkpoint, chex, absl, torch, numpy, but no network).
# bench.sh and train_demo.sh install them there with `pip install --no-index .whl/*`.
#
#   benchmarks/gpu/wheels.sh            # here, on a machine with PyPI access
#
# Pinned to what this project tests with; --no-deps, so every dependency that the GPU
# image lacks is listed by name.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=(
  ml-collections==1.1.0
  tensorflow-datasets==4.9.10 importlib-resources==7.1.0 array-record==0.8.6
  dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9
  docstring-parser==0.18.0 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  termcolor==3.3.0 toml==0.10.2
  grain==0.2.18 portpicker==1.6.0
  tensorboardx==2.6.5
  diffusers==0.42.1 importlib-metadata==10.2.0
)
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl "${WHEELS[@]}"
# promise (a tfds dependency) is published as a source distribution only (pure Python).
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
du -sh .whl
