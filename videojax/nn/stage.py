"""A stage's network: its denoiser, the conditioning its kind takes, and its space.

`StageNetwork.from_config(config)` is the one place a stage's network is made: the
denoiser `config.model` names (`nn.denoisers.build`), the stage kind
(`config.data.kind`: base, tsr or ssr) and the output shape (`config.data`). The
trainer, the planner, the cascade and the field fit all build it here, and call it
with the stage's inputs as a batch holds them,

    network.apply(variables, z, logsnr, text=..., text_mask=..., cond_video=...,
                  cond_mask=..., aug_logsnr=..., is_image=..., train=...)

which assembles the conditioning for the kind (`nn.conditioning.assemble`) and calls
the denoiser by its contract. `abstract_inputs` gives the same inputs as
`jax.ShapeDtypeStruct`s (for `jax.eval_shape`, ahead-of-time lowering and random
initialisation), from the kind alone.

A stage works on pixels, or on the latents of the autoencoder its config's
`autoencoder` section names (`nn.autoencoders.LatentSpace`): then `apply` takes latents
(z, and a conditioning video already encoded with `encode`), and `network_shape` maps
a video's shape to its latents'. Videos go in and out of a stage as pixels either way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from videojax.nn import conditioning, denoisers
from videojax.nn.autoencoders import LatentSpace

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class StageNetwork:
  """A denoiser and the kind of stage it serves.

  Attributes:
    model: the denoiser module (the contract of `videojax.nn.denoisers`).
    kind: 'base', 'tsr' or 'ssr' (`nn.conditioning.STAGE_KINDS`).
    spatial_factor: ssr only: output size / conditioning size.
    space: the latent space the stage diffuses in, or None for pixels.
  """

  model: nn.Module
  kind: str = "base"
  spatial_factor: int = 1
  space: LatentSpace | None = None

  def __post_init__(self):
    if self.kind not in conditioning.STAGE_KINDS:
      raise ValueError(f"Unknown stage kind {self.kind!r}; expected one of "
                       f"{conditioning.STAGE_KINDS}.")
    if self.space is not None:
      if self.model.in_channels != self.space.latent_channels:
        raise ValueError(f"A latent stage's denoiser must take the autoencoder's "
                         f"{self.space.latent_channels} latent channels; its in_channels is "
                         f"{self.model.in_channels}: set model.in_channels and "
                         "model.out_channels to it.")
      if self.kind == "tsr" and self.space.module.temporal_factor != 1:
        raise ValueError("A latent 'tsr' stage needs an autoencoder that keeps every frame "
                         "(temporal_factor 1): its given frames are placed frame by frame.")

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> "StageNetwork":
    """The network of a stage config (`model`, `data.kind` / `data.spatial_factor`, and
    the optional `autoencoder`)."""
    data = config["data"]
    return cls(denoisers.build(config["model"]), data["kind"],
               int(data.get("spatial_factor", 1)) if data["kind"] == "ssr" else 1,
               LatentSpace.from_config(config.get("autoencoder")))

  @property
  def text_dim(self) -> int:
    """Width of the text embeddings the denoiser reads (0: none)."""
    return int(self.model.text_dim)

  @property
  def channels(self) -> int:
    """Channels of the stage's space (3 for pixels, or an autoencoder's latent width)."""
    return int(self.model.in_channels)

  @property
  def video_channels(self) -> int:
    """Channels of the videos the stage makes and takes (its autoencoder's, if any)."""
    return int(self.space.module.channels) if self.space else self.channels

  def network_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The denoiser's input shape for videos of `shape` [B, T, H, W, C]."""
    return self.space.latent_shape(tuple(shape)) if self.space else tuple(shape)

  def encode(self, video: Array) -> Array:
    """Videos into the stage's space (the identity for a pixel stage)."""
    return self.space.encode(video) if self.space else video

  def decode(self, x: Array) -> Array:
    """The stage's space back to videos (the identity for a pixel stage)."""
    return self.space.decode(x) if self.space else x

  def clone(self, **model_fields) -> "StageNetwork":
    """The same stage with some denoiser fields changed (e.g. how it runs)."""
    return dataclasses.replace(self, model=self.model.clone(**model_fields))

  def _call(self, method, variables_or_rngs, z, logsnr, *, text=None, text_mask=None,
            cond_video=None, cond_mask=None, aug_logsnr=None, is_image=None, train=False,
            **flax_kw):
    cond = conditioning.assemble(self.kind, z.shape, cond_video, cond_mask)
    if cond is not None and aug_logsnr is None:
      raise ValueError(f"A '{self.kind}' stage needs aug_logsnr [B] with its cond_video "
                       "(the conditioning augmentation level).")
    if not getattr(self.model, "SUPPORTS_IMAGES", False):
      is_image = None  # the contract: only a denoiser that declares it reads is_image
    kw = dict(text=text, text_mask=text_mask, cond=cond,
              aug_logsnr=aug_logsnr if cond is not None else None, is_image=is_image,
              train=train)
    return method(variables_or_rngs, z, logsnr, **kw, **flax_kw)

  def apply(self, variables: Any, z: Array, logsnr: Array, **kw) -> Array:
    """The denoiser's prediction [B, T, H, W, out_channels] for the stage's inputs
    (keywords as in the module docstring; flax `apply` keywords such as `rngs`,
    `mutable` or `capture_intermediates` pass through)."""
    return self._call(self.model.apply, variables, z, logsnr, **kw)

  def init(self, rng: Array, z: Array, logsnr: Array, **kw) -> Any:
    """The denoiser's variables (boxed with their logical axis names) for these inputs."""
    return self._call(self.model.init, rng, z, logsnr, **kw)

  def abstract_inputs(self, shape: tuple[int, ...], text_len: int = 16
                      ) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct, dict]:
    """(z, logsnr, keyword inputs) as ShapeDtypeStructs for denoiser inputs of `shape`
    [B, T, H, W, C] (`network_shape` of the videos): what `apply` and `init` take for
    this stage kind."""
    b, t = shape[:2]
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    kw = {}
    if self.text_dim:
      kw.update(text=f32(b, text_len, self.text_dim), text_mask=f32(b, text_len))
    cond_shape = conditioning.cond_video_shape(self.kind, tuple(shape), self.spatial_factor)
    if cond_shape is not None:
      kw.update(cond_video=f32(*cond_shape), aug_logsnr=f32(b))
      if self.kind == "tsr":
        kw["cond_mask"] = f32(b, t)
    return f32(*shape), f32(b), kw

  def init_abstract(self, rng: Array, shape: tuple[int, ...], text_len: int = 16) -> Any:
    """`init` on zeros of `abstract_inputs(shape, text_len)` (use under jit or
    eval_shape: nothing is computed twice)."""
    z, logsnr, kw = self.abstract_inputs(shape, text_len)
    zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
    return self.init(rng, zeros(z), zeros(logsnr), **{k: zeros(v) for k, v in kw.items()})

  def param_count(self, shape: tuple[int, ...], text_len: int = 16) -> int:
    """Parameters, from abstract shapes only (jax.eval_shape: nothing allocated)."""
    shapes = jax.eval_shape(lambda: self.init_abstract(jax.random.PRNGKey(0), shape, text_len))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))
