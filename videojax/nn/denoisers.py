"""The denoiser contract, and the registry that builds a stage's network from its config.

A stage holds one denoiser: a Flax linen module, named in the stage config by
`model.name`, whose other `model` fields are its dataclass fields. Every denoiser is
called the same way,

    out = denoiser.apply(variables, z, logsnr, *, text=None, text_mask=None, cond=None,
                         aug_logsnr=None, is_image=None, train=False)

  z           [B, T, H, W, in_channels] the noisy input, in the stage's space (pixels,
              or an autoencoder's latents).
  logsnr      [B] its noise level as a log-SNR, whatever the formulation (a
              flow-matching stage passes the log-SNR of its time,
              `diffusion.flow.logsnr_from_time`).
  text        [B, L, text_dim] frozen-encoder embeddings and text_mask [B, L] (1 = a
              real token), for a denoiser with `text_dim` > 0; None otherwise.
  cond        [B, T, H, W, C_cond] the stage's conditioning on z's grid, assembled
              from the stage kind by `videojax.nn.conditioning.assemble` (an SSR
              stage's upsampled input; a TSR stage's given frames and their mask), or
              None for a base stage. The denoiser decides how to read it (the U-Net
              concatenates it to z on channels).
  aug_logsnr  [B] the noise level of the conditioning augmentation; given exactly when
              `cond` is.
  is_image    [B] bool or None: that example's frames are independent images (joint
              image-video training). Only for denoisers with SUPPORTS_IMAGES.
  train       dropout on (needs a 'dropout' rng).

and returns the prediction [B, T, H, W, out_channels] in float32 (eps, x0, v or a
velocity: whatever its stage trains it for). Which parameters exist may depend on
which inputs are given at init (text, cond), never on their values.

Class attributes a denoiser declares:
  RUN_FIELDS       fields that change how it runs, not what it computes (dtypes,
                   rematerialisation, kernels, dropout): weights trained with one value
                   load with any other.
  SUPPORTS_IMAGES  whether it honours `is_image`.
and the fields `in_channels`, `out_channels` and `text_dim` (0: no text).

`tests/nn/test_denoiser_contract.py` checks all of this for every registered denoiser,
each with the `tiny` variant of its configs/<name>.py. Adding a denoiser: its module
file and one entry in `_BUILTIN` (or `register` at run time for one defined elsewhere).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

# name -> "module:Class", imported when first built (no import cost for unused ones).
_BUILTIN = {
    "unet3d": "videojax.nn.unet3d:UNet3D",
}
_REGISTERED: dict[str, type[nn.Module]] = {}
# Fields every denoiser reads from the config, not its own dataclass fields.
_META = ("name",)


def register(name: str, cls: type[nn.Module]) -> type[nn.Module]:
  """Makes `cls` buildable as `model.name = name`; returns it (usable as a decorator
  through `functools.partial`). Raises ValueError for a name already taken."""
  if name in _BUILTIN or name in _REGISTERED:
    raise ValueError(f"A denoiser named {name!r} is registered already.")
  _REGISTERED[name] = cls
  return cls


def names() -> tuple[str, ...]:
  """Every registered denoiser's name."""
  return tuple(_BUILTIN) + tuple(_REGISTERED)


def get(name: str) -> type[nn.Module]:
  """The denoiser class registered as `name`."""
  if name in _REGISTERED:
    return _REGISTERED[name]
  if name not in _BUILTIN:
    raise ValueError(f"Unknown denoiser model.name={name!r}; registered: {list(names())}.")
  module, _, cls = _BUILTIN[name].partition(":")
  return getattr(importlib.import_module(module), cls)


def _name(model_config: Mapping[str, Any]) -> str:
  if "name" not in model_config:
    raise ValueError("The model config has no `name` (the denoiser to build, e.g. "
                     f"'unet3d'); registered: {list(names())}.")
  return model_config["name"]


def build(model_config: Mapping[str, Any]) -> nn.Module:
  """The denoiser a config's `model` section names, from its fields.

  Dtype fields ('dtype', 'param_dtype') may be given by name ('bfloat16').

  Raises:
    ValueError: an unknown name, an unknown field or a bad dtype name.
  """
  name = _name(model_config)
  cls = get(name)
  kw = {k: v for k, v in dict(model_config).items() if k not in _META}
  for key in ("dtype", "param_dtype"):
    if isinstance(kw.get(key), str):
      try:
        kw[key] = jnp.dtype(kw[key])
      except TypeError:
        raise ValueError(f"model.{key} {kw[key]!r} is not a dtype name; use 'float32' or "
                         "'bfloat16'.") from None
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  unknown = set(kw) - known
  if unknown:
    raise ValueError(f"Unknown {name} fields {sorted(unknown)} in the model config; "
                     f"{cls.__name__} has {sorted(known)}.")
  return cls(**kw)


def function_fields(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """The config's denoiser name and every field that fixes what it computes (all but
  its RUN_FIELDS), with the class defaults filled in: two configs whose function fields
  differ give different functions from the same weights."""
  name = _name(model_config)
  cls = get(name)
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731 (json: lists)
  out = {"name": name}
  for f in dataclasses.fields(cls):
    if f.name in ("parent", "name") or f.name in cls.RUN_FIELDS:
      continue
    default = f.default if f.default is not dataclasses.MISSING else None
    out[f.name] = norm(model_config.get(f.name, default))
  return out
