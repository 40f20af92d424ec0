"""Make-A-Video inflation: a video U-Net's parameters from a trained image U-Net's.

The image model is the same `UNet3D` configuration with its temporal layers off
(no temporal convolutions, no temporal attention). Every module of the video model
that exists in the image model has the same name and shapes there, and every layer
the video model adds is zero-initialised and residual (TemporalConv, the attention
blocks' output projections), so the inflated video model's output on a video equals
the image model's output frame by frame until training moves the new layers.
"""

from __future__ import annotations

from typing import Any

import flax


def inflate(image_params: Any, video_params: Any) -> Any:
  """Copies every image parameter into a freshly initialised video parameter tree.

  Args:
    image_params: trained image U-Net parameters (plain or boxed pytree of dicts).
    video_params: the video U-Net's initial parameters (same config plus temporal
      layers), e.g. from `model.init`.

  Returns:
    video_params with every leaf that the image model has replaced by the image's.

  Raises:
    ValueError naming the keys: image parameters that the video model lacks, or whose
    shapes differ (the two configs are not the same network).
  """
  image = flax.traverse_util.flatten_dict(flax.core.unfreeze(image_params), sep="/")
  video = flax.traverse_util.flatten_dict(flax.core.unfreeze(video_params), sep="/")
  missing = sorted(set(image) - set(video))
  if missing:
    raise ValueError(f"The video model has no parameters {missing[:8]}"
                     f"{' ...' if len(missing) > 8 else ''}: inflate from the same U-Net "
                     "config with temporal layers switched off.")
  shape = lambda x: getattr(flax.linen.meta.unbox(x), "shape", None)  # noqa: E731
  bad = [f"{k}: image {shape(image[k])} vs video {shape(video[k])}" for k in sorted(image)
         if shape(image[k]) != shape(video[k])]
  if bad:
    raise ValueError(f"Parameter shapes differ between the image and video models: {bad[:8]}.")
  merged = {**video, **image}
  return flax.traverse_util.unflatten_dict(merged, sep="/")


def image_config_of(video_fields: dict[str, Any]) -> dict[str, Any]:
  """The image-model fields matching a video U-Net's: temporal layers switched off."""
  out = dict(video_fields)
  out.update(temporal_conv_levels=(), temporal_attn_levels=(),
             temporal_downsample=(False,) * (len(out.get("channel_mult", (1, 2, 4))) - 1))
  return out


__all__ = ["inflate", "image_config_of"]
