"""Test setup: 8 fake CPU devices for sharding tests, and a persistent compile cache.

Both must be configured before JAX initialises its backend, hence at import time.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402

# Reuse compiled programs across test runs (and xdist workers); CI keeps the cache
# in the user's cache directory, so a second run compiles almost nothing.
_cache = os.environ.get(
    "VIDEOJAX_TEST_JAX_CACHE",
    os.path.join(os.path.expanduser("~"), ".cache", "videojax", "jax_tests"))
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
