"""The one module that touches orbax: async, atomic checkpoints of a train state.

A checkpoint holds the train state (any pytree of jax.Arrays), the data iterator's
state and the config (both JSON). Saves are asynchronous and keep the last K; orbax
writes each into a temporary directory and renames it when complete, so an
interrupted save never becomes the latest. A step that exists is never overwritten.
Restoring goes onto the shardings of an abstract state, so a checkpoint written on
one mesh restores onto another; a tree that does not match fails naming the keys.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import orbax.checkpoint as ocp


def _name(entry: Any) -> str:
  for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey, SequenceKey
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _paths(tree: Any) -> dict[str, tuple]:
  """'a/b/c' -> shape, whether the tree holds arrays, dataclasses or saved metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_name(e) for e in p): tuple(getattr(x, "shape", ())) for p, x in flat}


class Checkpointer:
  """Async checkpoints every `save_every` steps in `directory`, keeping the last `keep`."""

  def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
    if save_every < 1 or keep < 1:
      raise ValueError(f"save_every and keep must be >= 1, got {save_every} and {keep}.")
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(directory, options=options,
                                       item_names=("state", "data", "config"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, *, data_state: dict, config: dict,
           force: bool = False) -> bool:
    """Saves now (asynchronously); False, with a log line, if `step` exists already."""
    del force
    if step in self._mngr.all_steps():
      logging.info("Checkpoint %d exists; not overwritten.", step)
      return False
    return self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config)), force=True)

  def maybe_save(self, step: int, state: Any, *, data_state: dict, config: dict) -> bool:
    if step % self.save_every:
      return False
    return self.save(step, state, data_state=data_state, config=config)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data_state, config) of `step` (default: the latest) onto abstract's shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError("No checkpoint to restore.")
    meta = self._mngr.item_metadata(step)
    saved = _paths(meta["state"]) if meta is not None and meta["state"] is not None else None
    if saved is not None:
      want = _paths(abstract_state)
      diff = sorted(set(saved) ^ set(want)) + sorted(
          k for k in set(saved) & set(want) if saved[k] != want[k])
      if diff:
        raise ValueError(f"Checkpoint step {step} does not match the model: differing keys "
                         f"{diff[:10]}{' ...' if len(diff) > 10 else ''}.")
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["config"]

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()
