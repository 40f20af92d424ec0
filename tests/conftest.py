"""Test setup: 8 fake CPU devices for sharding tests, and a persistent compile cache.

Both must be configured before JAX initialises its backend, hence at import time.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
# The tests' programs are small and run a few times each: compiling them dominates the
# suite. Cheaper LLVM code generation cuts compile time by about a third (e.g. the
# sharded SR-stage step test); subprocess tests inherit the flags.
if "xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = _flags.strip()

from videojax.runtime import enable_compilation_cache  # noqa: E402

# Reuse compiled programs across test runs and xdist workers; a second run compiles
# almost nothing. Kept apart from the CLIs' cache.
enable_compilation_cache(os.environ.get(
    "VIDEOJAX_TEST_JAX_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "videojax", "jax_tests")))


def pytest_collection_modifyitems(config, items):
  """Tests marked `slow` run only when asked for (`-m slow`): the default run must stay
  under CI's 10 minutes on 2 cores. They are reported as deselected, not as passed."""
  if config.option.markexpr:
    return
  slow = [item for item in items if item.get_closest_marker("slow")]
  if slow:
    config.hook.pytest_deselected(items=slow)
    items[:] = [item for item in items if not item.get_closest_marker("slow")]
