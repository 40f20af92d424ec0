"""The one module that touches orbax: async, atomic checkpoints of a train state.

A checkpoint step holds three items:

- `state`: the train state, any pytree of `jax.Array`s (a flax.struct dataclass
  TrainState with params, opt_state, ema_params and step, for instance);
- `data`: the input pipeline's iterator state (a JSON-serialisable dict);
- `config`: the run's config as a dict (JSON; tuples come back as lists).

Saves are asynchronous (`save` returns once the arrays are copied off the devices;
writing continues in a background thread) and keep the last `keep` steps. orbax
writes each step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>` only
when every item is complete, so an interrupted save never becomes the latest: the
step list ignores such leftovers, and a later save of that step replaces them.

A step that already exists is never overwritten: `save` skips it with a log line
and returns False (so a final `save(..., force=True)` after a periodic save of the
same step is harmless).

Restoring goes onto the shardings carried by an abstract state, so a checkpoint
written on one mesh restores onto another. Before reading any array, the saved tree
is compared with the abstract one (paths, shapes, dtypes) and a `ValueError` names
every differing key.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Self

import jax
import numpy as np
import orbax.checkpoint as ocp

_log = logging.getLogger(__name__)
_MAX_LISTED = 20  # differing keys shown in a mismatch error


def _key_name(entry: Any) -> str:
  """The plain name of one path entry (GetAttrKey, DictKey, SequenceKey, ...)."""
  for attr in ("name", "key", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """Maps 'a/b/c' paths of a tree's leaves to (shape, dtype name).

  Dataclass fields, dict keys and sequence indices all become plain path parts, so
  an abstract TrainState compares equal to orbax's saved metadata (nested dicts and
  lists). Empty nodes (optax's EmptyState, None) have no leaves on either side.

  Args:
    tree: a pytree of arrays, `jax.ShapeDtypeStruct`s or orbax array metadata.

  Returns:
    A dict from path to (shape, dtype name); dtype is '?' where a leaf has none.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = {}
  for path, leaf in flat:
    dtype = getattr(leaf, "dtype", None)
    out["/".join(_key_name(e) for e in path)] = (
        tuple(getattr(leaf, "shape", ())), np.dtype(dtype).name if dtype is not None else "?")
  return out


def tree_diff(saved: Any, wanted: Any) -> list[str]:
  """Describes how two trees differ in paths, shapes and dtypes.

  Args:
    saved: the checkpoint's tree (orbax metadata, or arrays).
    wanted: the tree to restore into (arrays or `jax.ShapeDtypeStruct`s).

  Returns:
    One line per differing key, sorted by key; empty when the trees match.
  """
  a, b = _leaf_specs(saved), _leaf_specs(wanted)
  lines = []
  for key in sorted(set(a) | set(b)):
    if key not in b:
      lines.append(f"{key}: in the checkpoint {a[key][0]} {a[key][1]}, not in the target")
    elif key not in a:
      lines.append(f"{key}: in the target {b[key][0]} {b[key][1]}, not in the checkpoint")
    elif a[key][0] != b[key][0] or (a[key][1] != b[key][1] and "?" not in (a[key][1], b[key][1])):
      lines.append(f"{key}: checkpoint {a[key][0]} {a[key][1]}, target {b[key][0]} {b[key][1]}")
  return lines


class Checkpointer:
  """Async, atomic, keep-last-K checkpoints of (state, data state, config).

  Attributes:
    directory: where the step directories live.
    save_every: `maybe_save` saves the steps that are multiples of this.
    keep: how many of the latest steps are kept; older ones are deleted.
  """

  def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: the directory holding one sub-directory per saved step.
      save_every: the period, in steps, of `maybe_save`.
      keep: the number of most recent checkpoints to keep (>= 1).
      async_save: write in a background thread; `wait()` blocks until done.

    Raises:
      ValueError: if `save_every` or `keep` is below 1.
    """
    if save_every < 1 or keep < 1:
      raise ValueError(f"Checkpointer needs save_every >= 1 and keep >= 1; got "
                       f"save_every={save_every}, keep={keep}.")
    # Absolute: newer Orbax refuses relative paths, and a later chdir cannot move it.
    self.directory = os.path.abspath(str(directory))
    self.save_every = int(save_every)
    self.keep = int(keep)
    self._name_format = ocp.step.standard_name_format()
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardSave)
    registry.add("state", ocp.args.StandardRestore)
    for item in ("data", "config"):
      registry.add(item, ocp.args.JsonSave)
      registry.add(item, ocp.args.JsonRestore)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(self.keep),
        step_name_format=self._name_format,
        enable_async_checkpointing=async_save,
        create=True)
    self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                       handler_registry=registry)

  def latest_step(self) -> int | None:
    """The newest finalized step (or one being saved by this object), None if none."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    """The finalized steps (and ones being saved by this object), ascending."""
    return sorted(self._mngr.all_steps())

  def _exists(self, step: int) -> bool:
    """Whether `step` is saved, being saved, or finalized on disk by someone else."""
    if step in self._mngr.all_steps():
      return True
    return ocp.step.build_step_path(self._mngr.directory, self._name_format, step).exists()

  def save(self, step: int, state: Any, *, data_state: dict, config: dict,
           force: bool = True) -> bool:
    """Starts saving `step` now; returns before the files are written.

    Args:
      step: the step number (the checkpoint's directory name).
      state: a pytree of `jax.Array`s, e.g. a TrainState.
      data_state: the data iterator's state (JSON-serialisable).
      config: the run's config as a dict (JSON-serialisable).
      force: save whatever the step; False saves only multiples of `save_every`.

    Returns:
      True if a save was started; False if the step is not due (force=False) or
      already exists (it is never overwritten; a log line says so).

    Raises:
      TypeError: if `data_state` or `config` is not a dict.
    """
    step = int(step)
    if not force and step % self.save_every:
      return False
    for name, value in (("data_state", data_state), ("config", config)):
      if not isinstance(value, dict):
        raise TypeError(f"Checkpointer.save: {name} must be a JSON-serialisable dict, got "
                        f"{type(value).__name__}; convert it first (e.g. config.to_dict()).")
    if self._exists(step):
      _log.info("Checkpoint step %d already exists in %s; not overwritten.", step,
                self.directory)
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state),
                              config=ocp.args.JsonSave(config))
    try:
      started = bool(self._mngr.save(step, args=args, force=True))
    except ocp.checkpoint_manager.StepAlreadyExistsError:
      _log.info("Checkpoint step %d already exists in %s; not overwritten.", step,
                self.directory)
      return False
    if started:  # one line per checkpoint (Orbax's own INFO lines are quieted by the CLIs)
      _log.info("Saving checkpoint step %d to %s", step,
                ocp.step.build_step_path(self._mngr.directory, self._name_format, step))
    return started

  def maybe_save(self, step: int, state: Any, *, data_state: dict, config: dict) -> bool:
    """Saves (asynchronously) when `step` is a multiple of `save_every`.

    Args:
      step, state, data_state, config: as for `save`.

    Returns:
      True if a save was started.
    """
    return self.save(step, state, data_state=data_state, config=config, force=False)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
    """Reads a checkpoint onto the shardings of an abstract state.

    Args:
      abstract_state: the target: a pytree of the same structure as the saved
        state whose leaves are `jax.ShapeDtypeStruct`s (or arrays) carrying a
        `.sharding`, e.g. `jax.eval_shape(init)` combined with NamedShardings.
        The mesh may differ from the one the checkpoint was written on.
      step: the step to read; None reads the latest.

    Returns:
      (state, data_state, config): the state in the target's structure and
      shardings, and the two dicts as saved.

    Raises:
      FileNotFoundError: if there is no checkpoint, or no checkpoint `step`.
      ValueError: if the target does not match the saved tree (keys missing on
        either side, other shapes or dtypes), or a leaf carries no sharding.
    """
    self.wait()  # a step being written by this object is readable once finished
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"No checkpoint in {self.directory} to restore; start from "
                                "scratch or point to a directory holding checkpoints.")
      step = steps[-1]
    elif int(step) not in steps:
      raise FileNotFoundError(f"No checkpoint step {step} in {self.directory}; "
                              f"available steps: {steps}.")
    step = int(step)
    unsharded = ["/".join(_key_name(e) for e in path)
                 for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
                 if getattr(leaf, "sharding", None) is None]
    if unsharded:
      raise ValueError(f"restore needs a sharding on every leaf of abstract_state; missing on "
                       f"{unsharded[:_MAX_LISTED]}. Build it as jax.ShapeDtypeStruct(shape, "
                       "dtype, sharding=NamedSharding(mesh, spec)).")
    meta = self._mngr.metadata(step).item_metadata
    saved = meta.get("state") if meta is not None else None
    if saved is not None:
      diff = tree_diff(getattr(saved, "tree", saved), abstract_state)
      if diff:
        more = f"\n  ... and {len(diff) - _MAX_LISTED} more" if len(diff) > _MAX_LISTED else ""
        raise ValueError(
            f"Checkpoint step {step} in {self.directory} does not match the target state; "
            f"{len(diff)} differing key(s):\n  " + "\n  ".join(diff[:_MAX_LISTED]) + more +
            "\nRestore with the model/optimizer config the checkpoint was written with, or "
            "start a fresh directory.")
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["config"]

  def read_params(self, step: int | None = None, key: str = "ema_params") -> tuple[Any, dict]:
    """One parameter tree of a saved state, as host numpy arrays, with the saved config.

    For sampling and export: no model, mesh or abstract state is needed.

    Args:
      step: the step to read; None reads the latest.
      key: the state field ('ema_params' or 'params').

    Returns:
      (params, config): the nested dict of numpy arrays and the config dict.
    """
    step = self._saved_step(step)
    path = str(ocp.step.build_step_path(self._mngr.directory, self._name_format, step))
    with warnings.catch_warnings():  # no target shardings: everything lands on the host
      warnings.simplefilter("ignore", UserWarning)
      state = ocp.PyTreeCheckpointer().restore(os.path.join(path, "state"))
    if key not in state:
      raise KeyError(f"The checkpoint's state has no {key!r}; it has {sorted(state)}.")
    return jax.tree.map(np.asarray, state[key]), self.read_config(step)

  def _saved_step(self, step: int | None) -> int:
    """`step` (None: the latest) once pending saves are written; FileNotFoundError if
    it was not saved."""
    self.wait()
    steps = self.all_steps()
    if not steps or (step is not None and int(step) not in steps):
      raise FileNotFoundError(f"No checkpoint {'' if step is None else f'step {step} '}in "
                              f"{self.directory}; available steps: {steps}.")
    return steps[-1] if step is None else int(step)

  def read_config(self, step: int | None = None) -> dict:
    """The config saved with a step (None: the latest), without reading any array."""
    step = self._saved_step(step)
    return self._mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    """Blocks until every pending asynchronous save is written and finalized."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._mngr.close()

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()
