"""The cascade: chain validation before compute, the Python API and the sample CLI, on
the tiny randomly initialised cascade (configs/cascades/tiny.py)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from videojax.cascade import stages as S
from videojax.cascade.chain import Cascade
from videojax.io.video import read_video

ROOT = S.ROOT
PROMPTS = ["a red circle moving left on a black background",
           "a blue square moving up on a white background"]


def _tiny():
  c = S.load_config_file("configs/cascades/tiny.py").to_dict()
  for name in c["order"]:  # stage configs loaded, so that tests can edit them
    c["stages"][name]["config"] = S.load_config_file(c["stages"][name]["config"])
  return ml_collections.ConfigDict(c)


def test_shipped_cascade_configs_validate():
  for name in ("tiny", "demo", "imagen_video"):
    stages = S.stages_from_config(S.load_config_file(f"configs/cascades/{name}.py"))
    assert stages[0].input is None and all(s.input for s in stages[1:])
  iv = S.stages_from_config(S.load_config_file("configs/cascades/imagen_video.py"))
  assert [s.output[:3] for s in iv][-1] == (128, 768, 1280) and iv[-1].output[3] == 24.0
  assert [s.kind for s in iv] == ["base", "tsr", "ssr", "ssr", "tsr", "tsr", "ssr"]


def test_default_cascade_is_the_packaged_demo_from_any_directory(tmp_path, monkeypatch):
  """Cascade.load() needs neither the checkout's configs/ nor its working directory: the
  stages take the configs recorded beside their weights, found from the package. The
  experiment-side configs/cascades/demo.py samples the same way from the same weights."""
  from videojax.cascade import demo, weights
  from videojax.cascade.chain import DEFAULT_CASCADE

  experiment = S.load_config_file("configs/cascades/demo.py")
  monkeypatch.chdir(tmp_path)
  cascade = Cascade.load()
  assert [s.name for s in cascade.stages] == ["base", "tsr", "ssr"]
  assert cascade.stages[-1].output == (16, 64, 64, 8.0)
  for stage in cascade.stages:
    assert stage.checkpoint == os.path.join(ROOT, "videojax", "assets", "demo", stage.name)
    assert stage.config.to_dict() == weights.load_config(stage.checkpoint).to_dict()
  assert os.path.samefile(DEFAULT_CASCADE, demo.__file__)
  assert S.load_config_file(DEFAULT_CASCADE).to_dict() == demo.get_config().to_dict()
  packaged = demo.get_config()
  for name in packaged.order:
    assert experiment.stages[name].config == f"configs/{name}.py:demo"
    assert experiment.stages[name].sample.to_dict() == packaged.stages[name].sample.to_dict()
    assert experiment.stages[name].checkpoint == packaged.stages[name].checkpoint
  assert experiment.text.to_dict() == packaged.text.to_dict()


def test_relative_paths_are_found_from_the_working_directory_then_the_checkout(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  # The checkout's own configs, from elsewhere (what tests and the CLIs rely on).
  assert S.load_config_file("configs/cascades/tiny.py").order == ("base", "tsr", "ssr")
  # A file of the user's, relative to where they are.
  (tmp_path / "mine.py").write_text("import ml_collections\n"
                                    "def get_config(arg):\n"
                                    "  return ml_collections.ConfigDict(dict(arg=arg))\n")
  assert S.load_config_file("mine.py:x").arg == "x"
  with pytest.raises(FileNotFoundError, match="Config file 'nowhere.py' not found"):
    S.load_config_file("nowhere.py")


@pytest.mark.parametrize("change,message", [
    (lambda c: (c.stages.base.config.update(dict(data=dict(frames=8))),
                c.stages.base.update(dict(output=(8, 8, 8, 4.0)))),
     "TSR stage 'tsr' expects 4 input frames but stage 'base' produces 8"),
    (lambda c: (c.stages.base.config.update(dict(data=dict(fps=2.0))),
                c.stages.base.update(dict(output=(4, 8, 8, 2.0)))),
     "TSR stage 'tsr' expects 4 input fps but stage 'base' produces 2"),
    (lambda c: c.update(dict(order=("base", "ssr"))),
     "SSR stage 'ssr' expects 8 input frames but stage 'base' produces 4"),
    (lambda c: c.update(dict(order=("tsr", "ssr"))),
     "The first stage 'tsr' is a tsr stage: it needs an input video"),
    (lambda c: c.stages.ssr.update(dict(output=(8, 32, 32, 8.0))),
     r"Stage 'ssr' declares output \(8, 32, 32, 8.0\)"),
    (lambda c: c.stages.ssr.update(dict(frame_chunk=3)),
     "frame_chunk 3 must divide its 8 frames"),
    (lambda c: c.update(dict(order=("base", "tsr", "sr"))),
     "Cascade order names 'sr' but stages has only"),
])
def test_chain_validation_names_stages_and_values(change, message):
  c = _tiny()
  change(c)
  with pytest.raises(ValueError, match=message):
    S.stages_from_config(c)


def test_frame_chunk_refused_with_temporal_attention():
  c = _tiny()
  c.stages.tsr.frame_chunk = 4
  with pytest.raises(ValueError, match="frame_chunk needs an SSR stage without temporal"):
    S.stages_from_config(c)


@pytest.fixture(scope="module")
def tiny_cascade():
  return Cascade.load("configs/cascades/tiny.py")


def test_sample_api_shapes_determinism_and_kept_frames(tiny_cascade):
  calls = []
  out = tiny_cascade.sample(PROMPTS, seed=0, keep_stages=True,
                            progress=lambda *a: calls.append(a))
  assert list(out) == ["base", "tsr", "ssr"]
  assert out["base"].shape == (2, 4, 8, 8, 3) and out["tsr"].shape == (2, 8, 8, 8, 3)
  assert out["ssr"].shape == (2, 8, 16, 16, 3) and out["ssr"].dtype == np.uint8
  # TSR keeps the frames it is given: every 2nd frame is the base stage's frame.
  np.testing.assert_array_equal(out["tsr"][:, ::2], out["base"])
  # Same seed, same video; another seed, another one.
  again = tiny_cascade.sample(PROMPTS, seed=0)
  np.testing.assert_array_equal(again, out["ssr"])
  assert not np.array_equal(tiny_cascade.sample(PROMPTS, seed=1), again)
  # The SSR stage ran in two chunks of 4 frames, reported to the progress callback.
  assert ("ssr", 2, 2) in calls and ("base", 1, 1) in calls


def test_non_finite_stage_output_is_an_error(tiny_cascade):
  runner = tiny_cascade._runners[1]
  if runner.params is None:  # weights load on first use: load them before breaking them
    tiny_cascade.sample(PROMPTS[:1], seed=0)
  good = runner.params
  runner.params = jax.tree.map(lambda x: x * np.nan, good)
  try:
    with pytest.raises(FloatingPointError, match="Stage 'tsr' produced non-finite values"):
      tiny_cascade.sample(PROMPTS[:1], seed=0)
  finally:
    runner.params = good
  with pytest.raises(ValueError, match="at least one prompt"):
    tiny_cascade.sample([], seed=0)


def test_stage_config_read_from_its_weights(tiny_cascade, tmp_path):
  """config '' takes the training config the weights were exported with: the same
  stages, the same video as the config file gives."""
  from videojax.cascade import weights

  want = tiny_cascade.sample(PROMPTS, seed=0)
  c = S.load_config_file("configs/cascades/tiny.py")
  for runner in tiny_cascade._runners:
    name = runner.stage.name
    weights.save(str(tmp_path / name), runner.params, runner.stage.config, dtype="float32")
    c.stages[name].update(dict(config="", checkpoint=str(tmp_path / name)))
  cascade = Cascade.load(c)
  for got, ref in zip(cascade.stages, tiny_cascade.stages):
    assert (got.kind, got.input, got.output, got.channels) == \
        (ref.kind, ref.input, ref.output, ref.channels)
    assert json.dumps(got.config.to_dict(), sort_keys=True) == \
        json.dumps(ref.config.to_dict(), sort_keys=True)
  np.testing.assert_array_equal(cascade.sample(PROMPTS, seed=0), want)
  c.stages.tsr.checkpoint = ""
  with pytest.raises(ValueError, match="Stage 'tsr' has neither a config nor a checkpoint"):
    S.stages_from_config(c)
  c.stages.tsr.checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="No stage weights at"):
    S.stages_from_config(c)


def test_sample_cli_writes_videos_and_never_overwrites(tmp_path):
  env = dict(os.environ, VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  out = str(tmp_path / "clip.gif")
  cmd = [sys.executable, "-m", "experiments.sample", "--cascade", "configs/cascades/tiny.py",
         "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--out", out, "--save_stages",
         "--cascade.stages.base.sample.num_steps=3"]
  run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  for i in range(2):
    video, _ = read_video(str(tmp_path / f"clip_{i}.gif"))
    assert video.shape == (8, 16, 16, 3)
    base, _ = read_video(str(tmp_path / f"clip_{i}_base.gif"))
    assert base.shape == (4, 8, 8, 3)
  first = read_video(str(tmp_path / "clip_0.gif"))[0]
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  # The earlier files stay; the new ones take the next free name.
  np.testing.assert_array_equal(read_video(str(tmp_path / "clip_0.gif"))[0], first)
  assert os.path.exists(tmp_path / "clip-1_0.gif") and str(tmp_path / "clip-1_1.gif") in \
      again.stdout
  bad = subprocess.run(cmd[:-1] + ["--cascade.stages.base.sample.num_stepz=3"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "num_stepz" in bad.stderr


def test_shipped_demo_weights_fit_their_stages():
  """The exported demo weights exist and have exactly the shapes their configs build.

  A U-Net field the weights' config lacks (added after they were exported) counts as
  its default, as the cascade reads it."""
  import dataclasses

  import flax.linen as nn

  from videojax.cascade import weights
  from videojax.nn import unet3d
  from videojax.nn.stage import StageNetwork

  plain = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 (tuples = lists)
  defaults = {f.name: plain(f.default) for f in dataclasses.fields(unet3d.UNet3D)
              if f.default is not dataclasses.MISSING and f.name not in ("parent", "name")}
  as_json = lambda c: json.dumps({k: v for k, v in plain(c.to_dict()).items()  # noqa: E731
                                  if k not in defaults or v != defaults[k]}, sort_keys=True)
  for stage in S.stages_from_config(S.load_config_file("configs/cascades/demo.py")):
    params, config = weights.load(stage.checkpoint)
    assert as_json(config.model) == as_json(stage.config.model)
    network = StageNetwork.from_config(stage.config)
    b, (t, h, w, _) = 1, stage.output  # noqa: RUF059
    shapes = jax.eval_shape(lambda: nn.meta.unbox(network.init_abstract(
        jax.random.PRNGKey(0), (b, t, h, w, 3), stage.config.text.max_len)))
    assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(np.shape, params)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_weights_trained_otherwise_are_refused_before_sampling():
  # The shipped SSR was trained as a residual stage; a config that says otherwise
  # would sample garbage, so loading its weights names the mismatch.
  c = S.load_config_file("configs/cascades/demo.py").to_dict()
  c["stages"]["ssr"]["config"] = S.load_config_file(c["stages"]["ssr"]["config"])
  c["stages"]["ssr"]["config"].diffusion.residual = False
  # The demo's truncated start needs a residual stage: refused when the cascade loads.
  with pytest.raises(ValueError, match=r"start_logsnr .* needs a residual stage"):
    Cascade.load(ml_collections.ConfigDict(c))
  c["stages"]["ssr"]["sample"]["start_logsnr"] = None
  c = ml_collections.ConfigDict(c)
  cascade = Cascade.load(c)
  low = np.zeros((1, 16, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match=r"Stage 'ssr'.*trained with diffusion.residual=True "
                                       r"but its config says False"):
    cascade.sample_stage("ssr", [""], low)
  # So is a U-Net field without parameters, which the weights' shapes cannot reveal.
  c = S.load_config_file("configs/cascades/demo.py").to_dict()
  c["stages"]["base"]["config"] = S.load_config_file(c["stages"]["base"]["config"])
  c["stages"]["base"]["config"].model.causal_temporal = True
  cascade = Cascade.load(ml_collections.ConfigDict(c))
  with pytest.raises(ValueError, match=r"Stage 'base'.*trained with model.causal_temporal="):
    cascade.sample_stage("base", ["a red circle moving left on a black background"])


def test_exported_sampler_cache_equals_jit_and_is_read_back(tmp_path, monkeypatch):
  from videojax.runtime import exported_cache

  def run(params, shape, cond, rng, known=None):
    return params["w"] * jax.random.normal(rng, shape) + cond["x"]

  jitted = jax.jit(run, static_argnums=1)
  args = ({"w": jnp.float32(2.0)}, (2, 3), {"x": jnp.ones((2, 3))}, jax.random.PRNGKey(0))
  want = jitted(*args)
  first = exported_cache(jitted, "tag", (1,), str(tmp_path))(*args)
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].endswith(".bin")
  np.testing.assert_array_equal(first, want)
  # A new process (a new wrapper) reads the program back instead of tracing it again.
  monkeypatch.setattr(jax.export, "export", lambda *a, **k: pytest.fail("re-exported"))
  again = exported_cache(jitted, "tag", (1,), str(tmp_path))(*args)
  np.testing.assert_array_equal(again, want)
  monkeypatch.undo()
  # Another tag (another model or settings) or another shape is another program.
  exported_cache(jitted, "other", (1,), str(tmp_path))(*args)
  exported_cache(jitted, "tag", (1,), str(tmp_path))(
      args[0], (4, 3), {"x": jnp.ones((4, 3))}, args[3])
  assert len(os.listdir(tmp_path)) == 3
  # prepare() from abstract arguments compiles the very program a call with arrays uses.
  cached = exported_cache(jitted, "prepared", (1,), str(tmp_path))
  params, _, cond, rng = jax.eval_shape(lambda: (args[0], 0, args[2], args[3]))
  cached.prepare(params, args[1], cond, rng)
  monkeypatch.setattr(jax.export, "export", lambda *a, **k: pytest.fail("not prepared"))
  np.testing.assert_array_equal(cached(*args), want)
  assert len(cached._compiled) == 1


def test_stages_are_prepared_ahead_with_the_inputs_they_get():
  """Cascade.sample loads each stage's program in a thread from abstract inputs while
  earlier stages run; a mismatch with the real inputs would compile a second one."""
  cascade = Cascade.load("configs/cascades/tiny.py")
  out = cascade.sample(PROMPTS[:1], seed=0)
  assert out.shape == (1, 8, 16, 16, 3)
  assert [len(r.sampler._compiled) for r in cascade._runners] == [1, 1, 1]


def test_given_encoder_replaces_the_configs(tmp_path):
  """Cascade.load(encoder=...) encodes prompts with it (e.g. an EmbeddingCache where the
  encoder's weights are not installed), and never builds the config's encoder."""
  from videojax.nn.text import EmbeddingCache

  dim = Cascade.load("configs/cascades/tiny.py")._text_dim
  length = 16
  emb = np.random.default_rng(0).normal(size=(len(PROMPTS), length, dim)).astype(np.float16)
  masks = np.ones((len(PROMPTS), length), np.int8)
  cache = EmbeddingCache(PROMPTS, emb, masks)
  cascade = Cascade.load("configs/cascades/tiny.py", encoder=cache)
  got, got_mask = cascade.encode(PROMPTS[::-1])
  np.testing.assert_array_equal(got, emb[::-1].astype(np.float32))
  np.testing.assert_array_equal(got_mask, masks[::-1])
  with pytest.raises(KeyError, match="not in the embedding cache"):
    cascade.encode(["a prompt the cache does not hold"])
