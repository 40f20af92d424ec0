"""A stage's weights for sampling: exported (shipped) directories, training workdirs.

An exported stage directory holds
  params.msgpack   the EMA parameters (flax msgpack; float16 by default: half the bytes,
                   cast back to the compute dtype on load)
  config.json      the stage's full training config
so that a cascade needs no training checkpoint, orbax or configs/ directory to run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import ml_collections
import numpy as np

PARAMS, CONFIG = "params.msgpack", "config.json"


def export(workdir: str, out_dir: str, *, step: int | None = None,
           dtype: str = "float16", key: str = "ema_params") -> str:
  """Writes a training run's EMA parameters and config as an exported directory.

  Args:
    workdir: the training workdir (holding checkpoints/).
    out_dir: where to write; must not hold an export already.
    step: the checkpoint step (None: the latest).
    dtype: storage dtype of the parameters ('float16' or 'float32').
    key: which parameters: 'ema_params' (default) or 'params' (the raw ones).

  Returns:
    The path of the parameters file.
  """
  from videojax.io.checkpoint import Checkpointer

  refuse_existing(out_dir)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=1 << 30)
  params, config = ckpt.read_params(step, key)
  ckpt.close()
  return save(out_dir, params, config, dtype=dtype)


def refuse_existing(out_dir: str) -> None:
  """FileExistsError if `out_dir` holds an export already (call before computing one)."""
  target = os.path.join(out_dir, PARAMS)
  if os.path.exists(target):
    raise FileExistsError(f"{target} exists; export into a new directory or delete it first.")


def save(out_dir: str, params: Any, config: Any, *, dtype: str = "float16") -> str:
  """Writes parameters and their stage config (a dict or ConfigDict) as an exported
  directory (refusing one that holds an export already); returns the parameters file."""
  refuse_existing(out_dir)
  config = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  params = jax.tree.map(lambda x: np.asarray(x, dtype), params)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, CONFIG), "w") as f:
    json.dump(config, f, indent=1, sort_keys=True)
  target = os.path.join(out_dir, PARAMS)
  with open(target, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(params))
  return target


def kind(path: str) -> str | None:
  """'export' or 'workdir' for a path holding stage weights, None otherwise."""
  if os.path.isfile(os.path.join(path, PARAMS)):
    return "export"
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return "workdir"
  return None


def load(path: str, key: str = "ema_params") -> tuple[Any, ml_collections.ConfigDict]:
  """(params as float32 numpy, stage config) from an export or a training workdir.

  `key` picks the parameters of a training workdir ('ema_params' or 'params').
  """
  if _kind_or_raise(path) == "export":
    with open(os.path.join(path, PARAMS), "rb") as f:
      params = flax.serialization.msgpack_restore(f.read())
    config = load_config(path)
  else:
    from videojax.io.checkpoint import Checkpointer

    ckpt = Checkpointer(os.path.join(path, "checkpoints"), save_every=1, keep=1 << 30)
    params, config = ckpt.read_params(key=key)
    ckpt.close()
    config = ml_collections.ConfigDict(config)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  return params, upgrade_config(config)


def load_config(path: str) -> ml_collections.ConfigDict:
  """The training config recorded with an export or a training workdir (its latest
  checkpoint), without reading the parameters."""
  if _kind_or_raise(path) == "export":
    with open(os.path.join(path, CONFIG)) as f:
      return upgrade_config(ml_collections.ConfigDict(json.load(f)))
  from videojax.io.checkpoint import Checkpointer

  with Checkpointer(os.path.join(path, "checkpoints"), save_every=1, keep=1 << 30) as ckpt:
    return upgrade_config(ml_collections.ConfigDict(ckpt.read_config()))


# Model fields that older versions had, with the value that meant "off": a config
# recorded with that value reads as it is without the field; any other value names a
# function this version cannot compute.
_REMOVED_MODEL_FIELDS = {"frame_time_scale": 0.0, "frame_gain": False}


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A recorded training config in the current form (older exports and checkpoints).

  Raises:
    ValueError: the weights use a model option that no longer exists.
  """
  model = config.get("model")
  if model is None or ("name" in model and not any(k in model for k in _REMOVED_MODEL_FIELDS)):
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  if "name" not in config.model:  # before the registry, every stage was a U-Net
    config.model.name = "unet3d"
  # The stage kind was also a U-Net field (cond: 'none' / 'ssr' / 'tsr'); it is data.kind.
  cond = config.model.get("cond")
  for key in ("cond", "cond_channels"):
    if key in config.model:
      del config.model[key]
  if cond is not None and {"none": "base"}.get(cond, cond) != config.data.kind:
    raise ValueError(f"These weights' config says model.cond={cond!r} but data.kind="
                     f"{config.data.kind!r}; they cannot both hold.")
  for key, off in _REMOVED_MODEL_FIELDS.items():
    if key in config.model:
      if config.model[key] != off:
        raise ValueError(f"These weights were trained with model.{key}="
                         f"{config.model[key]!r}, an option this version of videojax no "
                         "longer has; use the version they were trained with.")
      del config.model[key]
  return config


def _kind_or_raise(path: str) -> str:
  found = kind(path)
  if found is None:
    raise FileNotFoundError(f"No stage weights at {path!r}: expected an exported directory "
                            f"({PARAMS}, {CONFIG}) or a training workdir with checkpoints/.")
  return found
