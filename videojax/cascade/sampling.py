"""Sampling one stage: the network, its conditioning and the diffusion sampler together.

Used by the trainer's sample previews and by the cascade. A stage samples
  z ~ N(0, I) of the stage's output shape
  -> sampler (DDPM / DDIM / DPM-Solver++ / Heun) over the stage's schedule, with
     classifier-free guidance against the empty text, thresholding of every x0
     prediction, and the conditioning video (if any) noised to the sampling
     augmentation level, as in training (Imagen Video's conditioning augmentation).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax import diffusion
from videojax.nn.conditioning import check_residual, conditioning_reference
from videojax.nn.text import null_text

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SampleSettings:
  """How a stage samples (a config's `sample` section).

  Attributes:
    sampler: 'ddpm', 'ddim', 'dpm_solver_pp' or 'heun'.
    num_steps: denoising steps.
    guidance_scale: classifier-free guidance scale (1: conditional only, no guidance).
    threshold: x0 clipping: 'none', 'static' or 'dynamic'.
    percentile: the dynamic-thresholding percentile.
    aug_level: conditioning-augmentation level in [0, 1] of the conditioning video.
    start_logsnr: residual SR stages only: None to sample from pure noise, or the
      log-SNR at which sampling starts from the reference plus noise (truncated,
      SDEdit-style; see `diffusion.sample`).
  """

  sampler: str = "ddim"
  num_steps: int = 32
  guidance_scale: float = 3.0
  threshold: str = "dynamic"
  percentile: float = 0.995
  aug_level: float = 0.0
  start_logsnr: float | None = None

  @classmethod
  def from_config(cls, c: Mapping[str, Any]) -> "SampleSettings":
    unknown = set(c) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"Unknown sample settings {sorted(unknown)}; expected names from "
                       f"{[f.name for f in dataclasses.fields(cls)]}.")
    s = cls(**dict(c))
    if s.num_steps < 1:
      raise ValueError(f"sample.num_steps must be >= 1, got {s.num_steps}.")
    if not 0.0 <= s.aug_level <= 1.0:
      raise ValueError(f"sample.aug_level must be in [0, 1], got {s.aug_level}.")
    diffusion.make_x0_transform(s.threshold, s.percentile)  # validates both
    return s


def make_stage_sampler(model: nn.Module, schedule: diffusion.Schedule, parameterization: str,
                       settings: SampleSettings, cache_tag: str | None = None,
                       residual: bool = False):
  """A jitted `sample(params, shape, cond, rng, known=None) -> [B, T, H, W, C] in [-1, 1]`.

  `shape` is the static output shape; `cond` holds the stage's conditioning as the
  U-Net takes it: text [B, L, D] and text_mask [B, L] for text stages, cond_video
  (low-resolution video for SSR, given frames on the output grid for TSR) and
  cond_mask [B, T] (TSR). aug_logsnr is added here from `settings.aug_level`.
  `known` = (video [B, T, H, W, C], mask [B, T]) fixes the x0 prediction on the masked
  frames to the given ones at every step (TSR: the network is not trained to predict
  the frames it is given, so they are replaced, as in replacement-based inpainting).

  With `residual` (a stage trained with `diffusion.residual`) the sampler draws the
  difference to the conditioning's reference (bicubic upsampling / frame blending of the
  clean conditioning video) and returns reference + difference; thresholding and the
  `known` frames act on the sum, the video.

  With `cache_tag` (a string naming everything the program depends on besides its
  arguments: model config, schedule, settings) the program is also kept on disk in
  exported form (`exported_cache`), so a warm start skips tracing the network.
  """
  x0_transform = diffusion.make_x0_transform(settings.threshold, settings.percentile)
  check_residual(model, residual)
  if settings.start_logsnr is not None and not residual:
    raise ValueError("sample.start_logsnr starts from the stage's reference plus noise, so it "
                     "needs a residual stage (diffusion.residual=True); set it to None.")

  # Jitted on its own so that the sampler's several calls of the network (the shape
  # check, the loop body, the last step) share one trace: tracing the U-Net is most of
  # a cached run's start-up.
  denoise_jit = jax.jit(lambda params, z, logsnr, cond: model.apply(params, z, logsnr, **cond))

  def denoise(params, z, logsnr, **cond):
    return denoise_jit(params, z, logsnr, cond)

  def run(params, shape, cond, rng, known=None):
    k_noise, k_aug, k_sample = jax.random.split(rng, 3)
    cond = dict(cond)
    ref = 0.0
    if residual:  # from the clean conditioning, as in training
      ref = conditioning_reference(model.cond, cond["cond_video"], cond.get("cond_mask"),
                                   shape[2], shape[3])
    if "cond_video" in cond:
      cond["cond_video"], cond["aug_logsnr"] = diffusion.augment(
          k_aug, cond["cond_video"], schedule=schedule, level=settings.aug_level)
    fn = lambda z, logsnr, **c: denoise(params, z, logsnr, **c)  # noqa: E731
    if "text" in cond and settings.guidance_scale != 1.0:
      b, length, dim = cond["text"].shape
      emb, mask = null_text(b, length, dim)
      fn = diffusion.classifier_free_guidance(fn, {"text": emb, "text_mask": mask},
                                              settings.guidance_scale)
    transform = x0_transform  # acts on the video's x0 prediction (None: none)
    if known is not None:
      given, given_mask = known
      keep = given_mask[:, :, None, None, None] > 0  # [B, T, 1, 1, 1]
      clip = x0_transform or (lambda x0: x0)
      transform = lambda x0: jnp.where(keep, given.astype(x0.dtype), clip(x0))  # noqa: E731
    if residual and transform is not None:  # the network's x0 is the difference to ref
      on_video = transform
      transform = lambda x0: on_video(x0 + ref) - ref  # noqa: E731
    noise = jax.random.normal(k_noise, shape, jnp.float32)
    video = diffusion.sample(fn, noise, schedule=schedule, sampler=settings.sampler,
                             num_steps=settings.num_steps, parameterization=parameterization,
                             x0_transform=transform, rng=k_sample, cond=cond,
                             start_logsnr=settings.start_logsnr)
    return jnp.clip(video + ref, -1.0, 1.0)

  jitted = jax.jit(run, static_argnums=1)
  return jitted if cache_tag is None else exported_cache(jitted, cache_tag)


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
  """Hash of the library's Python sources: an edited model never reuses an old program."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  h = hashlib.sha256()
  for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
      if f.endswith(".py"):
        with open(os.path.join(d, f), "rb") as fh:
          h.update(f.encode() + fh.read())
  return h.hexdigest()


class exported_cache:  # noqa: N801 (used like a function decorator)
  """`jitted(params, shape, cond, rng, known)` behind a disk cache of its exported program.

  Tracing the U-Net in Python is most of a warm start of the sample command (~1.5 s of
  the demo base stage's 3.6 s): the traced and lowered program (`jax.export`) is kept in
  <JAX compilation cache dir>/videojax_exported/, keyed by `tag`, the arguments' tree,
  shapes and dtypes, the jax version, the backend and the library's sources; XLA's
  persistent cache then supplies the compiled executable. Without a compilation cache
  directory (`videojax.runtime.enable_compilation_cache`) the program is `jitted`'s own.
  `directory` overrides where the exported programs go.

  `prepare(params, shape, cond, rng, known)` does all of that ahead of a call, from
  arrays or `jax.ShapeDtypeStruct`s (loading an executable from the persistent cache is
  ~1 s per demo stage on 2 CPU cores): the cascade prepares its later stages in a
  thread while earlier ones run.
  """

  def __init__(self, jitted: Callable[..., Array], tag: str, directory: str | None = None):
    self._jitted, self._tag, self._directory = jitted, tag, directory
    self._compiled: dict[str, Callable[..., Array]] = {}  # signature -> executable
    self._lock = threading.Lock()

  def _signature(self, shape, args) -> str:
    leaves, tree = jax.tree.flatten(args)
    avals = [(tuple(jnp.shape(x)), str(jnp.result_type(x)), bool(getattr(x, "weak_type", False)))
             for x in leaves]
    signature = repr((self._tag, tuple(shape), str(tree), avals, jax.__version__,
                      jax.default_backend(), _source_hash()))
    return hashlib.sha256(signature.encode()).hexdigest()

  def prepare(self, params, shape, cond, rng, known=None) -> Callable[..., Array]:
    """The compiled program for arguments like these: `program(params, cond, rng, known)`."""
    shape = tuple(shape)
    args = (params, cond, rng, known)
    key = self._signature(shape, args)
    with self._lock:
      if key in self._compiled:
        return self._compiled[key]
    cache = jax.config.jax_compilation_cache_dir
    folder = self._directory or (cache and os.path.join(cache, "videojax_exported"))
    if not folder:
      program = self._jitted.lower(params, shape, cond, rng, known).compile()
    else:
      path = os.path.join(folder, key + ".bin")
      if os.path.exists(path):
        with open(path, "rb") as f:
          exported = jax.export.deserialize(bytearray(f.read()))
      else:
        jitted = self._jitted
        exported = jax.export.export(
            jax.jit(lambda p, c, r, k: jitted(p, shape, c, r, k)))(*args)
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
          f.write(exported.serialize())
        os.replace(tmp, path)  # atomic: concurrent runs never read half a file
      program = jax.jit(exported.call).lower(*args).compile()
    with self._lock:
      return self._compiled.setdefault(key, program)

  def __call__(self, params, shape, cond, rng, known=None) -> Array:
    return self.prepare(params, shape, cond, rng, known)(params, cond, rng, known)
