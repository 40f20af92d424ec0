"""Process-level settings shared by the entry points and the tests: what the command
lines log, JAX's compilation cache, and the disk cache of traced programs that makes a
warm start of the sample command fast."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from typing import Any, Callable, Sequence


# Python loggers whose INFO records are libraries' chatter, not the command's output:
# Orbax and TFDS log through absl's logger ("absl"; about 50 lines per checkpoint save),
# JAX through "jax.*" (e.g. "Unable to initialize backend 'tpu'" on every machine without
# a TPU, logged while it probes the platforms that no one asked for).
LIBRARY_LOGGERS = ("absl", "jax", "orbax")


def quiet_library_logs() -> None:
  """Sets how much the libraries log, from absl's --verbosity.

  For the command lines, called in `main` (after flags are parsed). At the default
  verbosity (0) the libraries show warnings and errors only; `--verbosity=1` brings
  back their INFO lines (Orbax's save steps, JAX's platform probing) but not JAX's
  DEBUG flood (~16k lines for a 20-step tiny run), which `--verbosity=2` adds. Our own
  modules log through their module loggers, which follow --verbosity as usual. Nothing
  real is hidden: a platform that was asked for (JAX_PLATFORMS, jax_platforms) and fails
  raises an error, and every library's warnings and errors still show.
  """
  from absl import logging as absl_logging

  verbosity = absl_logging.get_verbosity()
  if verbosity > absl_logging.DEBUG:
    return
  level = logging.WARNING if verbosity <= absl_logging.INFO else logging.INFO
  for name in LIBRARY_LOGGERS:
    if name == "jax" and os.environ.get("JAX_LOGGING_LEVEL"):
      continue  # JAX's own logging setting wins
    logging.getLogger(name).setLevel(level)


def enable_compilation_cache(path: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache (compiled programs kept on disk).

  On 2 CPU cores this cuts a train-step compile from seconds to a fraction of a
  second on every run after the first.

  Args:
    path: cache directory; default $VIDEOJAX_JAX_CACHE or ~/.cache/videojax/jax.

  Returns:
    The directory used.
  """
  import jax  # imported here so that `import videojax` stays cheap

  path = path or os.environ.get("VIDEOJAX_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "videojax", "jax")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  return path


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
  """Hash of the library's Python sources: an edited model never reuses an old program."""
  root = os.path.dirname(os.path.abspath(__file__))
  h = hashlib.sha256()
  for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
      if f.endswith(".py"):
        with open(os.path.join(d, f), "rb") as fh:
          h.update(f.encode() + fh.read())
  return h.hexdigest()


class exported_cache:  # noqa: N801 (used like a function decorator)
  """A jitted function behind a disk cache of its exported (traced and lowered) program.

  Tracing a U-Net or a text encoder in Python is most of a warm start of the sample
  command once XLA's persistent cache holds the compiled executables (~1.5 s of the demo
  base stage's 3.6 s, 0.8 s for MiniLM): the `jax.export` program is kept in
  <JAX compilation cache dir>/videojax_exported/, keyed by `tag` (everything the
  function depends on besides its arguments), the static arguments, the other
  arguments' tree, shapes and dtypes, the jax version, the backend and the library's
  sources; XLA's persistent cache then supplies the compiled executable. Without a
  compilation cache directory (`enable_compilation_cache`) the program is `jitted`'s own.
  `directory` overrides where the exported programs go.

  `prepare(*args)` does all of that ahead of a call, from arrays or
  `jax.ShapeDtypeStruct`s (loading an executable from the persistent cache takes ~1 s
  per demo stage on 2 CPU cores), e.g. in a thread while other work runs.
  """

  def __init__(self, jitted: Callable[..., Any], tag: str,
               static_argnums: Sequence[int] = (), directory: str | None = None):
    self._jitted, self._tag, self._directory = jitted, tag, directory
    self._static = tuple(static_argnums)
    self._compiled: dict[str, Callable[..., Any]] = {}  # signature -> executable
    self._lock = threading.Lock()

  def _split(self, args) -> tuple[tuple, tuple]:
    static = tuple(args[i] for i in self._static)
    return static, tuple(a for i, a in enumerate(args) if i not in self._static)

  def _signature(self, static, dynamic) -> str:
    import jax
    import jax.numpy as jnp

    leaves, tree = jax.tree.flatten(dynamic)
    avals = [(tuple(jnp.shape(x)), str(jnp.result_type(x)), bool(getattr(x, "weak_type", False)))
             for x in leaves]
    signature = repr((self._tag, static, str(tree), avals, jax.__version__,
                      jax.default_backend(), _source_hash()))
    return hashlib.sha256(signature.encode()).hexdigest()

  def prepare(self, *args) -> Callable[..., Any]:
    """The compiled program for arguments like these; it takes the non-static ones."""
    import jax

    static, dynamic = self._split(args)
    key = self._signature(static, dynamic)
    with self._lock:
      if key in self._compiled:
        return self._compiled[key]
    cache = jax.config.jax_compilation_cache_dir
    folder = self._directory or (cache and os.path.join(cache, "videojax_exported"))
    if not folder:
      program = self._jitted.lower(*args).compile()
    else:
      path = os.path.join(folder, key + ".bin")
      if os.path.exists(path):
        with open(path, "rb") as f:
          exported = jax.export.deserialize(bytearray(f.read()))
      else:
        exported = jax.export.export(jax.jit(self._with_static(static)))(*dynamic)
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
          f.write(exported.serialize())
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
      program = jax.jit(exported.call).lower(*dynamic).compile()
    with self._lock:
      return self._compiled.setdefault(key, program)

  def _with_static(self, static) -> Callable[..., Any]:
    def fn(*dynamic):
      args = list(dynamic)
      for i, value in sorted(zip(self._static, static)):
        args.insert(i, value)
      return self._jitted(*args)
    return fn

  def __call__(self, *args) -> Any:
    import jax

    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args)):
      return self._jitted(*args)  # inside a trace (e.g. a train step): nothing to cache
    return self.prepare(*args)(*self._split(args)[1])
