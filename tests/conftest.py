"""Test setup: 8 fake CPU devices for sharding tests, and a persistent compile cache.

Both must be configured before JAX initialises its backend, hence at import time.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

from videojax.runtime import enable_compilation_cache  # noqa: E402

# Reuse compiled programs across test runs and xdist workers; a second run compiles
# almost nothing. Kept apart from the CLIs' cache.
enable_compilation_cache(os.environ.get(
    "VIDEOJAX_TEST_JAX_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "videojax", "jax_tests")))
