"""The trainer end to end on moving_shapes (tiny): learning, previews, evaluation, the
non-finite abort. Resume (exact, after SIGKILL, on another mesh) and the checkpoint
mismatch error: tests/train/test_kill_resume.py."""

import glob
import os

import numpy as np
import pytest

from tests.train.conftest import tiny_config
from videojax.train import trainer
from videojax.io.checkpoint import Checkpointer


def _ckpt(workdir):
  return Checkpointer(os.path.join(workdir, "checkpoints"), save_every=10, keep=3)


def test_tiny_base_learns_moving_shapes_and_writes_previews(tiny_data_dir, tmp_path, caplog):
  c = tiny_config(tiny_data_dir, 200, one_level=True)
  c.optim.total_steps = 200
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.eval_every = 200
  c.train.preview_every = 200
  caplog.set_level("INFO")
  out = trainer.train_and_evaluate(c, str(tmp_path))
  losses = [float(r.getMessage().split(" loss ")[1].split()[0]) for r in caplog.records
            if " loss " in r.getMessage()]
  # Measured (2-core CPU, batch of 4, one batch per logged value, the one-level U-Net):
  # mean of the first three logged losses 0.85, of the last five 0.42 (ratio 0.49; the
  # two-level tiny U-Net: 0.43). A model that does not learn stays at 0.7-0.9.
  print("logged losses", [round(x, 3) for x in losses])
  assert len(losses) == 20
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
  assert all(np.isfinite(out[k]) for k in ("eval_loss_logsnr-5", "eval_loss_logsnr0",
                                           "eval_loss_logsnr5"))
  # Parameter overview at start; a GIF preview in the workdir and in TensorBoard.
  assert any("total" in r.getMessage() and "params" in r.getMessage() for r in caplog.records)
  assert out["preview"].endswith("samples_00000200.gif") and os.path.exists(out["preview"])
  events = glob.glob(str(tmp_path / "tensorboard" / "events.*"))
  assert events and b"preview/samples" in open(events[0], "rb").read()


def test_non_finite_loss_stops_and_writes_nothing_after(tiny_data_dir, tmp_path):
  c = tiny_config(tiny_data_dir, 20, one_level=True)
  c.train.checkpoint_every = 1
  c.optim.learning_rate = float("nan")  # the first update makes every parameter NaN
  with pytest.raises(FloatingPointError,
                     match=r"Non-finite loss nan at step 2; last good checkpoint: step 1"):
    trainer.train_and_evaluate(c, str(tmp_path / "nan"))
  assert _ckpt(tmp_path / "nan").all_steps() == [1]


def test_init_from_copies_a_smaller_model_and_starts_from_its_function(tiny_data_dir, tmp_path):
  """A run with train.init_from starts from a trained model with fewer attention layers:
  the added layers' residual outputs are zero, so at step 0 the new model computes the
  source model's function; every shared parameter (and its EMA) is the source's."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from videojax.cascade import weights
  from videojax.nn import denoisers

  src = tiny_config(tiny_data_dir, 0, one_level=True)
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(2, 4, 8, 8, 3)), jnp.float32)
  text = jnp.asarray(rng.normal(size=(2, 5, src.model.text_dim)), jnp.float32)
  kw = dict(text=text, text_mask=jnp.ones((2, 5)))
  src_model = denoisers.build(src.model)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(src_model.init(
      jax.random.PRNGKey(0), z, jnp.zeros((2,)), **kw)))
  # "trained" source weights: every parameter random (none at its initial value)
  p_src = jax.tree.map(lambda x: rng.normal(0.0, 0.1, x.shape).astype(np.float32), shapes)
  weights.save(str(tmp_path / "src"), p_src, src, dtype="float32")
  dst = tiny_config(tiny_data_dir, 0, one_level=True)  # no steps: the state it starts from
  dst.model.spatial_attn_levels = (0,)
  dst.train.init_from = str(tmp_path / "src")
  trainer.train_and_evaluate(dst, str(tmp_path / "dst"))
  p_dst, _ = weights.load(str(tmp_path / "dst"))
  raw, _ = weights.load(str(tmp_path / "dst"), key="params")
  flat = lambda p: {"/".join(map(str, k)): v for k, v in  # noqa: E731
                    jax.tree_util.tree_flatten_with_path(p)[0]}
  f_src, f_dst, f_raw = flat(p_src), flat(p_dst), flat(raw)
  assert set(f_src) < set(f_dst)
  assert any("spatial_attn" in k and "down0_0" in k for k in set(f_dst) - set(f_src))
  for k, v in f_src.items():
    np.testing.assert_array_equal(f_dst[k], v, err_msg=k)
    np.testing.assert_array_equal(f_raw[k], v, err_msg=k)
  logsnr = jnp.array([0.0, 3.0])
  out_src = src_model.apply(p_src, z, logsnr, **kw)
  out_dst = denoisers.build(dst.model).apply(p_dst, z, logsnr, **kw)
  assert float(jnp.abs(out_src).mean()) > 1e-2  # a non-trivial function
  np.testing.assert_allclose(out_dst, out_src, rtol=1e-5, atol=1e-5)


def test_init_from_without_weights_is_refused_before_anything_is_written(tiny_data_dir,
                                                                         tmp_path):
  c = tiny_config(tiny_data_dir, 2)
  c.train.init_from = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match=r"train.init_from=.*nothing.* holds no weights"):
    trainer.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_batches_from_worker_processes_train_the_same_model(tiny_data_dir, tmp_path):
  """data.workers makes the same batches in other processes, so a run with workers ends
  with the same parameters (bitwise) as one without; the host reads losses a few steps
  late, which changes no result."""
  import jax

  runs = {}
  for workers in (0, 2):
    c = tiny_config(tiny_data_dir, 7, one_level=True)
    c.data.workers = workers
    c.train.log_every = 100  # steps 1-6 dispatch without waiting for their losses
    c.train.checkpoint_every = 100
    trainer.train_and_evaluate(c, str(tmp_path / f"w{workers}"))
    runs[workers] = _ckpt(tmp_path / f"w{workers}").read_params(7, "params")[0]
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), runs[0], runs[2])
  assert jax.tree.all(same)


def test_a_video_folder_without_validation_split_trains(tmp_path, caplog):
  """A folder of the user's videos builds with no validation split by default; training
  runs on it without held-out losses and says so."""
  from configs import base as base_config
  from videojax.io.video import write_video

  folder = tmp_path / "videos"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(2):
    frames = np.zeros((20, 32, 32, 3), np.uint8)  # the default build: 16-frame clips
    for t in range(20):  # a bright square sliding right
      frames[t, 8:20, t:t + 12] = rng.integers(100, 255, 3)
    write_video(str(folder / f"clip{i}.mp4"), frames, fps=8)
  c = base_config.get_config("tiny")
  c.data.update(dataset="video_folder", config="", folder=str(folder),
                data_dir=str(tmp_path / "tfds"), frame_stride=1, batch_size=2)
  c.model.text_dim = 0  # unlabeled clips, no encoder
  c.mesh.num_devices = 1
  c.train.update(num_steps=2, log_every=1, eval_every=1, checkpoint_every=2)
  c.optim.update(warmup_steps=1, total_steps=2)
  caplog.set_level("WARNING")
  out = trainer.train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(out["loss"]) and not any(k.startswith("eval_loss") for k in out)
  assert any("no validation split" in r.getMessage() for r in caplog.records)
