"""Latent spaces for stages: the autoencoders a stage may diffuse in, and their registry.

A stage config's `autoencoder` section names one (`name`; '' or absent: the stage works
on pixels). A latent stage trains on the latents of its clips (the frozen encoder runs
inside the train step) and its sampler decodes what it draws, so a cascade passes
videos from stage to stage whatever space each works in, and a pixel stage can follow
a latent one.

Every autoencoder here is a Flax module with
  encode(video [B, T, H, W, C]) -> latents [B, T / ft, H / fs, W / fs, latent_channels]
  decode(latents) -> video
and the fields `channels` (of the video), `latent_channels`, `spatial_factor` (fs) and
`temporal_factor` (ft). `LatentSpace` binds one to its (frozen) parameters.

`patchify` is exactly invertible (space-to-depth): it has no parameters, so latent
stages, latent cascades and their checks are tested with it before any trained
autoencoder exists.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Patchify(nn.Module):
  """Space-to-depth: each fs x fs patch of a frame becomes one latent pixel of
  fs * fs * C channels; decode is its exact inverse. No parameters."""

  spatial_factor: int = 2
  channels: int = 3
  temporal_factor: int = 1  # frames are not merged

  @property
  def latent_channels(self) -> int:
    return self.channels * self.spatial_factor ** 2

  def _check(self, x: Array, channels: int, what: str) -> None:
    f = self.spatial_factor
    if x.ndim != 5 or x.shape[-1] != channels or x.shape[2] % f or x.shape[3] % f:
      raise ValueError(f"patchify {what} takes [B, T, H, W, {channels}] with H, W divisible "
                       f"by {f}, got {x.shape}.")

  def encode(self, video: Array) -> Array:
    self._check(video, self.channels, "encode")
    b, t, h, w, c = video.shape
    f = self.spatial_factor
    x = video.reshape(b, t, h // f, f, w // f, f, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // f, w // f, f * f * c)

  def decode(self, latents: Array) -> Array:
    f, c = self.spatial_factor, self.channels
    if latents.ndim != 5 or latents.shape[-1] != self.latent_channels:
      raise ValueError(f"patchify decode takes [B, T, h, w, {self.latent_channels}], got "
                       f"{latents.shape}.")
    b, t, h, w, _ = latents.shape
    x = latents.reshape(b, t, h, w, f, f, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h * f, w * f, c)

  def __call__(self, video: Array) -> Array:  # init / a round trip
    return self.decode(self.encode(video))


_AUTOENCODERS = {"patchify": Patchify}


@dataclasses.dataclass(frozen=True)
class LatentSpace:
  """An autoencoder bound to its frozen parameters: a stage's latent space."""

  module: nn.Module
  params: Any = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, ae: Mapping[str, Any] | None) -> "LatentSpace | None":
    """The space a stage config's `autoencoder` section names; None for pixel stages."""
    if not ae or not ae.get("name"):
      return None
    name = ae["name"]
    if name not in _AUTOENCODERS:
      raise ValueError(f"Unknown autoencoder {name!r}; expected one of {sorted(_AUTOENCODERS)} "
                       "(or '' for a pixel stage).")
    module = _AUTOENCODERS[name](**{k: v for k, v in dict(ae).items() if k != "name"})
    return cls(module)

  @property
  def latent_channels(self) -> int:
    return int(self.module.latent_channels)

  def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The latents' shape for videos of `shape` [B, T, H, W, C]."""
    b, t, h, w, _ = shape
    m = self.module
    if t % m.temporal_factor or h % m.spatial_factor or w % m.spatial_factor:
      raise ValueError(f"Videos of (T, H, W) = {(t, h, w)} do not divide into the "
                       f"autoencoder's factors (T / {m.temporal_factor}, H, W / "
                       f"{m.spatial_factor}); choose sizes that do.")
    return (b, t // m.temporal_factor, h // m.spatial_factor, w // m.spatial_factor,
            self.latent_channels)

  def encode(self, video: Array) -> Array:
    return self.module.apply({"params": self.params}, video, method="encode")

  def decode(self, latents: Array) -> Array:
    return self.module.apply({"params": self.params}, latents, method="decode")
