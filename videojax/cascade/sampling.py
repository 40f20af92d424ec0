"""Sampling one stage: the network, its conditioning and the diffusion sampler together.

Used by the trainer's sample previews and by the cascade. A stage samples
  z ~ N(0, I) of the stage's output shape
  -> sampler (DDPM / DDIM / DPM-Solver++ / Heun over the stage's schedule; Euler / Heun
     over the time grid of a flow-matching stage), with
     classifier-free guidance against the empty text (and, optionally, time-reversal
     guidance), thresholding of every x0 prediction (SSR: optionally its projection
     onto the low-resolution input), and the conditioning video (if any) noised to
     the sampling augmentation level, as in training (Imagen Video's conditioning
     augmentation).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from videojax import diffusion
from videojax.diffusion import flow
from videojax.nn.conditioning import check_residual, conditioning_reference, project_to_low_res
from videojax.nn.stage import StageNetwork
from videojax.nn.text import null_text
from videojax.runtime import exported_cache

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SampleSettings:
  """How a stage samples (a config's `sample` section).

  Attributes:
    sampler: 'ddpm', 'ddim', 'dpm_solver_pp' or 'heun' (variance-preserving stages);
      'euler' or 'heun' (flow-matching stages).
    num_steps: denoising steps.
    spacing: the step grid: 'uniform' in t, 'logsnr' (uniform in log-SNR: more steps
      at the noisy end, where a base decides the layout and the motion) or 'karras'
      (`diffusion.step_grid`).
    guidance_scale: classifier-free guidance scale (1: conditional only, no guidance).
    noisy_guidance_scale: None for one scale throughout; or the scale used at the steps
      below `noisy_logsnr` (the noisy end, where a base decides layout and motion;
      `diffusion.noisy_end_guidance`).
    noisy_logsnr: where the noisy end stops (log-SNR).
    reversal_guidance_scale: 0, or the scale of guidance away from the video played
      backwards (`diffusion.time_reversal_guidance`: the motion's sign; twice the
      network calls), at the steps below `reversal_logsnr`.
    reversal_logsnr: where time-reversal guidance stops (log-SNR; inf: everywhere).
    threshold: x0 clipping: 'none', 'static' or 'dynamic'.
    percentile: the dynamic-thresholding percentile.
    aug_level: conditioning-augmentation level in [0, 1] of the conditioning video.
    start_logsnr: residual SR stages only: None to sample from pure noise, or the
      log-SNR at which sampling starts from the reference plus noise (truncated,
      SDEdit-style; see `diffusion.sample`).
    consistency: SSR stages only: project every x0 prediction onto the videos in [-1, 1]
      whose box downsampling is the low-resolution input (`conditioning.project_to_low_res`).
  """

  sampler: str = "ddim"
  num_steps: int = 32
  spacing: str = "uniform"
  guidance_scale: float = 3.0
  noisy_guidance_scale: float | None = None
  noisy_logsnr: float = -3.0
  reversal_guidance_scale: float = 0.0
  reversal_logsnr: float = float("inf")
  threshold: str = "dynamic"
  percentile: float = 0.995
  aug_level: float = 0.0
  start_logsnr: float | None = None
  consistency: bool = False

  @classmethod
  def from_config(cls, c: Mapping[str, Any]) -> "SampleSettings":
    unknown = set(c) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"Unknown sample settings {sorted(unknown)}; expected names from "
                       f"{[f.name for f in dataclasses.fields(cls)]}.")
    s = cls(**dict(c))
    if s.num_steps < 1:
      raise ValueError(f"sample.num_steps must be >= 1, got {s.num_steps}.")
    if s.spacing not in diffusion.SPACINGS:
      raise ValueError(f"sample.spacing must be one of {diffusion.SPACINGS}, got "
                       f"{s.spacing!r}.")
    if not 0.0 <= s.aug_level <= 1.0:
      raise ValueError(f"sample.aug_level must be in [0, 1], got {s.aug_level}.")
    diffusion.make_x0_transform(s.threshold, s.percentile)  # validates both
    return s

  @property
  def guides(self) -> bool:
    """Whether a text stage samples with classifier-free guidance (two halves per call)."""
    return self.guidance_scale != 1.0 or self.noisy_guidance_scale is not None

  def guidance(self):
    """The scale `diffusion.classifier_free_guidance` takes: a number, or a function of
    the log-SNR with `noisy_guidance_scale`."""
    if self.noisy_guidance_scale is None:
      return self.guidance_scale
    return diffusion.noisy_end_guidance(self.guidance_scale, self.noisy_guidance_scale,
                                        self.noisy_logsnr)

  def guide(self, fn, text_shape: tuple[int, ...] | None = None):
    """`fn(z, logsnr, **cond)` with the guidance these settings ask for: time reversal
    inside classifier-free guidance against the empty text (for a text stage:
    `text_shape`, the [B, L, D] shape of its text embeddings; None without text)."""
    if self.reversal_guidance_scale:
      fn = diffusion.time_reversal_guidance(fn, self.reversal_guidance_scale,
                                            self.reversal_logsnr)
    if text_shape is not None and self.guides:
      emb, mask = null_text(*text_shape)
      fn = diffusion.classifier_free_guidance(fn, {"text": emb, "text_mask": mask},
                                              self.guidance())
    return fn

  def network_batch(self, batch: int, has_text: bool) -> int:
    """Videos per network call when sampling `batch` (the largest, with time reversal
    below a log-SNR)."""
    return (batch * (2 if has_text and self.guides else 1)
            * (2 if self.reversal_guidance_scale else 1))


def make_stage_sampler(network: StageNetwork, schedule: diffusion.Schedule, parameterization: str,
                       settings: SampleSettings, cache_tag: str | None = None,
                       residual: bool = False, formulation: str = "vp",
                       time_shift: float = 1.0):
  """A jitted `sample(params, shape, cond, rng, known=None) -> [B, T, H, W, C] in [-1, 1]`.

  `shape` is the static shape of the videos it makes (a latent stage samples their
  latents, encodes its conditioning video and decodes what it draws); `cond` holds the stage's conditioning as
  `StageNetwork.apply` takes it: text [B, L, D] and text_mask [B, L] for text stages, cond_video
  (low-resolution video for SSR, given frames on the output grid for TSR) and
  cond_mask [B, T] (TSR). aug_logsnr is added here from `settings.aug_level`.
  `known` = (video [B, T, H, W, C], mask [B, T]) fixes the x0 prediction on the masked
  frames to the given ones at every step (TSR: the network is not trained to predict
  the frames it is given, so they are replaced, as in replacement-based inpainting).

  With `residual` (a stage trained with `diffusion.residual`) the sampler draws the
  difference to the conditioning's reference (bicubic upsampling / frame blending of the
  clean conditioning video) and returns reference + difference; thresholding and the
  `known` frames act on the sum, the video.

  A flow-matching stage (`formulation='flow'`, its network predicting velocities)
  integrates over `flow.time_grid(num_steps, time_shift)` with settings.sampler 'euler'
  or 'heun'; `parameterization`, `schedule` and `spacing` concern VP stages only (the
  schedule still noises the conditioning video for augmentation).

  With `cache_tag` (a string naming everything the program depends on besides its
  arguments: model config, schedule, settings) the program is also kept on disk in
  exported form (`exported_cache`), so a warm start skips tracing the network.
  """
  x0_transform = diffusion.make_x0_transform(settings.threshold, settings.percentile)
  check_residual(network.kind, residual)
  if settings.consistency and network.kind != "ssr":
    raise ValueError(f"sample.consistency projects onto an SSR stage's low-resolution input; "
                     f"this is a {network.kind!r} stage: set it to False.")
  if formulation == "flow":
    if settings.sampler not in flow.SAMPLERS:
      raise ValueError(f"A flow-matching stage samples with one of {flow.SAMPLERS}, got "
                       f"sample.sampler={settings.sampler!r}.")
    if settings.start_logsnr is not None:
      raise ValueError("sample.start_logsnr is for variance-preserving residual stages; a "
                       "flow-matching stage starts from noise: set it to None.")
  elif formulation != "vp":
    raise ValueError(f"Unknown formulation {formulation!r}; expected 'vp' or 'flow'.")
  if network.space is not None and (settings.threshold != "none" or settings.consistency):
    raise ValueError("Thresholding and sample.consistency act on pixels, but this stage "
                     "samples an autoencoder's latents: set sample.threshold='none' and "
                     "sample.consistency=False.")
  if settings.start_logsnr is not None and not residual:
    raise ValueError("sample.start_logsnr starts from the stage's reference plus noise, so it "
                     "needs a residual stage (diffusion.residual=True); set it to None.")

  # Jitted on its own so that the sampler's several calls of the network (the shape
  # check, the loop body, the last step) share one trace: tracing the U-Net is most of
  # a cached run's start-up.
  denoise_jit = jax.jit(lambda params, z, logsnr, cond: network.apply(params, z, logsnr,
                                                                      **cond))

  def denoise(params, z, logsnr, **cond):
    return denoise_jit(params, z, logsnr, cond)

  def run(params, shape, cond, rng, known=None):
    k_noise, k_aug, k_sample = jax.random.split(rng, 3)
    cond = dict(cond)
    shape = network.network_shape(shape)  # a latent stage samples latents
    if "cond_video" in cond:
      cond["cond_video"] = network.encode(cond["cond_video"])
    if known is not None:
      known = (network.encode(known[0]), known[1])
    ref = 0.0
    if residual:  # from the clean conditioning, as in training
      ref = conditioning_reference(network.kind, cond["cond_video"], cond.get("cond_mask"),
                                   shape[2], shape[3])
    low = cond.get("cond_video")  # clean, before augmentation
    if "cond_video" in cond:
      cond["cond_video"], cond["aug_logsnr"] = diffusion.augment(
          k_aug, cond["cond_video"], schedule=schedule, level=settings.aug_level)
    fn = settings.guide(lambda z, logsnr, **c: denoise(params, z, logsnr, **c),
                        cond["text"].shape if "text" in cond else None)
    transform = x0_transform  # acts on the video's x0 prediction (None: none)
    if known is not None:
      given, given_mask = known
      keep = given_mask[:, :, None, None, None] > 0  # [B, T, 1, 1, 1]
      clip = x0_transform or (lambda x0: x0)
      transform = lambda x0: jnp.where(keep, given.astype(x0.dtype), clip(x0))  # noqa: E731
    if settings.consistency:
      inner = transform or (lambda x0: x0)
      transform = lambda x0: project_to_low_res(inner(x0), low)  # noqa: E731
    if residual and transform is not None:  # the network's x0 is the difference to ref
      on_video = transform
      transform = lambda x0: on_video(x0 + ref) - ref  # noqa: E731
    noise = jax.random.normal(k_noise, shape, jnp.float32)
    if formulation == "flow":
      video = flow.sample(fn, noise, sampler=settings.sampler, num_steps=settings.num_steps,
                          shift=time_shift, x0_transform=transform, cond=cond)
    else:
      video = diffusion.sample(fn, noise, schedule=schedule, sampler=settings.sampler,
                               num_steps=settings.num_steps, spacing=settings.spacing,
                               parameterization=parameterization,
                               x0_transform=transform, rng=k_sample, cond=cond,
                               start_logsnr=settings.start_logsnr)
    return jnp.clip(network.decode(video + ref), -1.0, 1.0)

  jitted = jax.jit(run, static_argnums=1)
  return jitted if cache_tag is None else exported_cache(jitted, cache_tag, static_argnums=(1,))


def stage_sampler(config: Mapping[str, Any], network: StageNetwork, settings: SampleSettings,
                  cache_tag: str | None = None):
  """`make_stage_sampler` for a stage config's diffusion section (schedule,
  parameterization, residual, formulation, time shift): how the trainer's previews and
  the cascade sample a stage."""
  d = config["diffusion"]
  return make_stage_sampler(network, diffusion.schedule_from_config(d), d["parameterization"],
                            settings, cache_tag, residual=d["residual"],
                            formulation=d.get("formulation", "vp"),
                            time_shift=d.get("time_shift", 1.0))
