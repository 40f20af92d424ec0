"""The denoiser contract (`videojax.nn.denoisers`), asserted for every registered denoiser.

Each registered name is built from the `tiny` variant of its configs/<name>.py. The
example denoiser (tests/nn/example_denoiser.py) is registered here with a config of its
own, and is also trained by the stage set-up and sampled by the stage sampler unchanged:
adding a denoiser is one module and one registration.

Properties of a function of the inputs are checked on parameters moved off their
initialisation (every leaf plus noise, as a trained model's would be): denoisers
zero-initialise their output layers, so at init every output would be equal.
"""

import dataclasses
import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base as base_configs
from tests.nn.example_denoiser import ExampleConvDenoiser
from videojax import diffusion
from videojax.cascade.sampling import SampleSettings, make_stage_sampler
from videojax.nn import denoisers
from videojax.nn.stage import StageNetwork
from videojax.parallel import sharding
from videojax.train import step as step_lib
from videojax.train.setup import train_setup

EXAMPLE = "example_conv"
# What a configs/<name>.py `tiny` variant holds for it: the model section and the stage
# output's (T, H, W).
EXAMPLE_MODEL = dict(name=EXAMPLE, in_channels=3, out_channels=3, text_dim=8, features=16,
                     emb_dim=32, dtype="float32")
EXAMPLE_INPUT = (4, 8, 8)
if EXAMPLE not in denoisers.names():  # importing this module again registers nothing
  denoisers.register(EXAMPLE, ExampleConvDenoiser)

KINDS = ("base", "ssr", "tsr")
B, L = 2, 6  # examples and text tokens of the contract's inputs
SSR_FACTOR = 2
TEXT_MASK = ((1, 1, 1, 1, 0, 0), (1, 1, 0, 0, 0, 0))  # [B, L]: both examples have padding
PERTURB = 0.05  # std of the noise added to every parameter
CHANGED = 1e-2  # an output "changes" when some entry moves by more than this (measured: > 0.17)
SAME = 1e-5  # an output is "unchanged" within this (measured: <= 6e-7, float32 rounding)
# A value other than the default of each run field a denoiser may declare, to check that
# it does not change the parameters. A new run field needs an entry here.
RUN_ALTERNATIVES = {"dtype": "bfloat16", "param_dtype": "bfloat16", "remat": "full",
                    "attn_query_chunk": 4, "attention_impl": "xla", "dropout": 0.1}


def model_config(name: str) -> tuple[ml_collections.ConfigDict, tuple[int, ...]]:
  """(the `model` section, the stage output's (T, H, W)) of the `tiny` variant of
  configs/<name>.py; the example's own for the example. Fails the test when a
  registered denoiser has no such config."""
  if name == EXAMPLE:
    return ml_collections.ConfigDict(EXAMPLE_MODEL), EXAMPLE_INPUT
  try:
    module = importlib.import_module(f"configs.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"configs.{name}":
      raise
    pytest.fail(f"Denoiser {name!r} is registered but there is no configs/{name}.py: add one "
                f"whose get_config('tiny') holds `model` (name={name!r} and its fields) and "
                "`input` (T, H, W, C), sized to run on CPU in seconds. The contract test "
                "builds every registered denoiser from it.")
  config = module.get_config("tiny")
  if config.model.get("name") != name:
    pytest.fail(f"configs/{name}.py:tiny has model.name={config.model.get('name')!r}, "
                f"expected {name!r}.")
  return config.model, tuple(config.get("input", (4, 8, 8)))[:3]


class Case:
  """A registered denoiser built from its config, with random inputs and perturbed
  parameters per stage kind, each computed (and compiled) once."""

  def __init__(self, name: str):
    self.name = name
    self.config, (t, h, w) = model_config(name)
    self.model = denoisers.build(self.config)
    self.cls = denoisers.get(name)
    self.shape = (B, t, h, w, self.model.in_channels)

  def network(self, kind: str) -> StageNetwork:
    return StageNetwork(self.model, kind, SSR_FACTOR if kind == "ssr" else 1)

  @functools.cache
  def inputs(self, kind: str) -> tuple[jax.Array, jax.Array, dict]:
    """(z, logsnr, keywords) of a stage of `kind` as `StageNetwork.apply` takes them,
    with random values (is_image all False where the denoiser supports it)."""
    z, _, abstract = self.network(kind).abstract_inputs(self.shape, L)
    keys = iter(jax.random.split(jax.random.PRNGKey(KINDS.index(kind)), 8))
    kw = {}
    for k, s in abstract.items():
      if k == "text":
        kw[k] = jax.random.normal(next(keys), s.shape)
      elif k == "text_mask":
        kw[k] = jnp.asarray(TEXT_MASK, jnp.float32)
      elif k == "cond_video":
        kw[k] = jax.random.uniform(next(keys), s.shape, minval=-1.0, maxval=1.0)
      elif k == "cond_mask":
        kw[k] = jnp.tile(jnp.arange(s.shape[1]) % 2 == 0, (B, 1)).astype(jnp.float32)
      elif k == "aug_logsnr":
        kw[k] = jnp.array([4.0, 6.0])
      else:
        raise AssertionError(f"abstract_inputs gave an input this test does not fill: {k}")
    if self.cls.SUPPORTS_IMAGES:
      kw["is_image"] = jnp.zeros((B,), bool)
    return jax.random.normal(next(keys), z.shape), jnp.array([-1.0, 2.0]), kw

  @functools.cache
  def params(self, kind: str):
    """Variables initialised on `inputs(kind)`, then every leaf plus noise."""
    net = self.network(kind)
    z, logsnr, kw = self.inputs(kind)
    variables = jax.jit(lambda key: nn.meta.unbox(net.init(key, z, logsnr, **kw)))(
        jax.random.PRNGKey(0))
    noise = np.random.default_rng(KINDS.index(kind))  # on the host: no RNG to compile
    return jax.tree.map(
        lambda x: x + PERTURB * noise.standard_normal(x.shape).astype(x.dtype), variables)

  @functools.cache
  def _apply(self, kind: str):
    net = self.network(kind)
    return jax.jit(lambda v, z, logsnr, kw, rng: net.apply(v, z, logsnr, rngs={"dropout": rng},
                                                           **kw))

  def apply(self, kind: str, z=None, logsnr=None, rng=None, **changes) -> np.ndarray:
    """The prediction with `kind`'s perturbed parameters on its inputs, some replaced."""
    z0, logsnr0, kw = self.inputs(kind)
    kw = {**kw, **changes}
    out = self._apply(kind)(self.params(kind), z0 if z is None else z,
                            logsnr0 if logsnr is None else logsnr, kw,
                            jax.random.PRNGKey(0) if rng is None else rng)
    return np.asarray(out)


@pytest.fixture(scope="module", params=denoisers.names())
def case(request):
  return Case(request.param)


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("kind", KINDS)
def test_output_shape_and_dtype(case, kind):
  """[B, T, H, W, out_channels] float32 for every stage kind: computed with the config's
  fields, and abstractly (nothing computed) with another out_channels and a bfloat16
  compute dtype."""
  out = case.apply(kind)
  assert out.shape == case.shape[:4] + (case.model.out_channels,)
  assert out.dtype == np.float32
  other = {"out_channels": case.model.in_channels + 2}
  if "dtype" in case.cls.RUN_FIELDS:
    other["dtype"] = jnp.bfloat16
  net = StageNetwork(case.model.clone(**other), kind, SSR_FACTOR if kind == "ssr" else 1)
  z, logsnr, kw = net.abstract_inputs(case.shape, L)
  out = jax.eval_shape(lambda z, logsnr, kw: net.apply(
      net.init(jax.random.PRNGKey(0), z, logsnr, **kw), z, logsnr, **kw), z, logsnr, kw)
  assert out.shape == case.shape[:4] + (other["out_channels"],)
  assert out.dtype == jnp.float32


def test_deterministic_without_train(case):
  """train=False: the same inputs and parameters give bitwise the same output, whatever
  the dropout rng."""
  a = case.apply("base", rng=jax.random.PRNGKey(1))
  b = case.apply("base", rng=jax.random.PRNGKey(2))
  assert np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)


def test_text_changes_output_and_padding_does_not(case):
  """The real tokens' embeddings change the prediction of each example; embeddings under
  text_mask == 0 change nothing."""
  if not case.model.text_dim:
    pytest.skip(f"{case.name}'s tiny config reads no text (text_dim=0).")
  _, _, kw = case.inputs("base")
  ref = case.apply("base")
  noise = jax.random.normal(jax.random.PRNGKey(7), kw["text"].shape)
  mask = kw["text_mask"][..., None]
  on_tokens = case.apply("base", text=kw["text"] + noise * mask)
  on_padding = case.apply("base", text=kw["text"] + 10.0 * noise * (1.0 - mask))
  for i in range(B):
    assert _max_diff(on_tokens[i], ref[i]) > CHANGED, f"example {i} ignores its text"
  np.testing.assert_allclose(on_padding, ref, atol=SAME, rtol=0)


def test_noise_level_changes_output(case):
  """Another log-SNR changes the prediction of each example."""
  ref = case.apply("base")
  other = case.apply("base", logsnr=jnp.array([3.0, -4.0]))
  for i in range(B):
    assert _max_diff(other[i], ref[i]) > CHANGED, f"example {i} ignores its noise level"


@pytest.mark.parametrize("kind", ["ssr", "tsr"])
def test_conditioning_video_changes_output(case, kind):
  """An SR stage's prediction depends on its conditioning video (for tsr: on the given
  frames, the only ones `assemble` passes on)."""
  _, _, kw = case.inputs(kind)
  ref = case.apply(kind)
  other = case.apply(kind, cond_video=-kw["cond_video"])
  for i in range(B):
    assert _max_diff(other[i], ref[i]) > CHANGED, f"example {i} ignores its conditioning"


def test_is_image_makes_frames_independent(case):
  """A video flagged is_image gives, per frame, the output of that frame alone as a
  one-frame image (to SAME); the same video unflagged does not (its frames are mixed),
  so the comparison can fail."""
  if not case.cls.SUPPORTS_IMAGES:
    pytest.skip(f"{case.name} does not declare SUPPORTS_IMAGES.")
  z, logsnr, kw = case.inputs("base")
  t = z.shape[1]
  twice = lambda x: jnp.concatenate([x[:1], x[:1]])  # noqa: E731 (example 0, twice)
  text = {k: twice(kw[k]) for k in ("text", "text_mask") if k in kw}
  video = case.apply("base", z=twice(z), logsnr=twice(logsnr), is_image=jnp.array([True, False]),
                     **text)
  frames = jnp.swapaxes(z[:1], 0, 1)  # [T, 1, H, W, C]: each frame a one-frame example
  alone = case.apply("base", z=frames, logsnr=jnp.repeat(logsnr[:1], t),
                     is_image=jnp.ones((t,), bool),
                     **{k: jnp.repeat(v[:1], t, axis=0) for k, v in text.items()})[:, 0]
  np.testing.assert_allclose(video[0], alone, atol=SAME, rtol=0)
  assert _max_diff(video[1], alone) > CHANGED, "frames of an unflagged video are not mixed"


def test_build_gives_equal_module(case):
  """`denoisers.build` makes the registered class with the config's fields (dtype names
  as dtypes), equal and of equal hash each time; the contract's fields and class
  attributes are there."""
  model = denoisers.build(case.config)
  again = denoisers.build(ml_collections.ConfigDict(case.config.to_dict()))
  assert type(model) is case.cls
  assert model == again and hash(model) == hash(again)
  for key, value in case.config.items():
    if key == "name":
      continue
    got = getattr(model, key)
    assert (jnp.dtype(got) == jnp.dtype(value) if key in ("dtype", "param_dtype")
            else got == value), key
  fields = {f.name for f in dataclasses.fields(case.cls)}
  assert {"in_channels", "out_channels", "text_dim"} <= fields
  assert isinstance(case.cls.RUN_FIELDS, tuple) and set(case.cls.RUN_FIELDS) <= fields
  assert isinstance(case.cls.SUPPORTS_IMAGES, bool)


def test_function_fields_leave_out_exactly_the_run_fields(case):
  """`function_fields` holds the name and every dataclass field but the RUN_FIELDS."""
  fields = {f.name for f in dataclasses.fields(case.cls)} - {"parent", "name"}
  got = denoisers.function_fields(case.config)
  assert set(got) == {"name"} | (fields - set(case.cls.RUN_FIELDS))
  assert got["name"] == case.name
  # Changing a run field keeps them; changing a field that is not one changes them.
  for run_field in case.cls.RUN_FIELDS:
    changed = {**case.config.to_dict(), run_field: RUN_ALTERNATIVES.get(run_field)}
    assert denoisers.function_fields(changed) == got, run_field
  assert denoisers.function_fields(
      {**case.config.to_dict(), "out_channels": case.model.out_channels + 1}) != got


def _param_shapes(model: nn.Module, shape, kind="base"):
  """The parameter tree as ShapeDtypeStructs (the stage set-up's `init_abstract`)."""
  net = StageNetwork(model, kind, SSR_FACTOR if kind == "ssr" else 1)
  return jax.eval_shape(lambda: nn.meta.unbox(net.init_abstract(jax.random.PRNGKey(0), shape,
                                                                L)))


def test_run_fields_keep_parameter_shapes(case):
  """Weights trained with one value of the run fields load with any other: with every
  run field changed at once, the same tree with the same shapes."""
  missing = set(case.cls.RUN_FIELDS) - set(RUN_ALTERNATIVES)
  if missing:
    pytest.fail(f"{case.name} has run fields {sorted(missing)}: add a value of each other "
                "than its default to RUN_ALTERNATIVES.")
  changed = {f: RUN_ALTERNATIVES[f] for f in case.cls.RUN_FIELDS}
  model = denoisers.build({**case.config.to_dict(), **changed})
  for f in changed:
    assert getattr(model, f) != getattr(case.model, f), f
  shapes = lambda m: jax.tree.map(lambda x: x.shape, _param_shapes(m, case.shape))  # noqa: E731
  ref, other = shapes(case.model), shapes(model)
  assert jax.tree.structure(other) == jax.tree.structure(ref), changed
  assert other == ref, changed


@pytest.mark.parametrize("kind", KINDS)
def test_params_depend_on_which_inputs_not_their_values(case, kind):
  """Initialised on random inputs or on zeros (as the stage set-up does), the parameters
  have the same tree and shapes."""
  zeros = jax.tree.map(lambda x: (x.shape, x.dtype), _param_shapes(case.model, case.shape, kind))
  random = jax.tree.map(lambda x: (x.shape, x.dtype), case.params(kind))
  assert jax.tree.structure(random) == jax.tree.structure(zeros)
  assert random == zeros


def test_registered_name_without_config_fails_clearly():
  with pytest.raises(pytest.fail.Exception, match="no configs/no_such_denoiser.py"):
    model_config("no_such_denoiser")


# The example through the library's machinery, unchanged.

def _example_stage_config() -> ml_collections.ConfigDict:
  """configs/base.py:tiny with the example as its denoiser (and a learning rate that
  shows learning within 20 steps)."""
  config = base_configs.get_config("tiny")
  config.model = ml_collections.ConfigDict(EXAMPLE_MODEL)
  config.optim.learning_rate = 3e-3
  config.optim.warmup_steps = 2
  return config


@pytest.fixture(scope="module")
def trained_example():
  """The example's stage trained for 20 steps on one fixed batch by `train_setup`'s
  jitted step on a one-device mesh.

  The batch's videos are random in [-1, 1], smooth in space (bilinear upsampling of a
  random 2 x 2 grid per frame): structure a few convolutions can learn in 20 steps,
  where i.i.d. pixels would allow at most a pointwise shrinkage.

  Returns:
    (setup, final state, per-step losses, batch, (loss before, loss after)), the last
    two the training objective at fixed noise and log-SNRs.
  """
  config = _example_stage_config()
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  setup = train_setup(config, mesh, batch_size=4)
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  batch = {}
  for k, (shape, dtype) in setup.shapes.items():
    if k == "video":
      b, t, _, _, c = shape
      coarse = jax.random.uniform(keys[0], (b, t, 2, 2, c), minval=-1.0, maxval=1.0)
      batch[k] = jax.image.resize(coarse, shape, "linear")
    elif k == "text_embeddings":
      batch[k] = jax.random.normal(keys[1], shape)
    elif k == "text_mask":
      batch[k] = (jnp.arange(shape[1]) < 5).astype(dtype)[None].repeat(shape[0], 0)
    elif k == "is_image":
      batch[k] = jnp.arange(shape[0]) == 0
    else:
      raise AssertionError(f"a base stage's batch has no {k}")
  eps = jax.random.normal(keys[3], batch["video"].shape)
  levels = jnp.linspace(-4.0, 4.0, eps.shape[0])
  objective = jax.jit(lambda params: jnp.mean(step_lib.noised_loss(
      setup.network, params, config.diffusion, batch["video"], eps, levels, None,
      **step_lib.model_inputs(batch))))
  losses = []
  with nn.logical_axis_rules(setup.rules), jax.set_mesh(mesh):
    state = setup.init_state()
    before = float(objective(state.params))
    for _ in range(20):
      state, metrics = setup.step(state, batch, keys[2])
      losses.append(float(metrics["loss"]))
    after = float(objective(state.params))
  return setup, state, losses, batch, (before, after)


def test_example_trains_through_the_stage_setup(trained_example):
  """The trainer's set-up builds the example from `model.name`, and its jitted step
  learns: every loss is finite, the last 5 steps' mean is below the first 5's (measured
  0.93x, the steps drawing fresh noise), and the objective at fixed noise falls by more
  than 10% (measured 0.81x; a step that does not learn stays at 1.0x)."""
  setup, state, losses, _, (before, after) = trained_example
  assert type(setup.network.model) is ExampleConvDenoiser
  assert int(state.step) == 20
  assert np.all(np.isfinite(losses)), losses
  assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
  assert after < 0.9 * before, (before, after)


def test_example_samples_through_the_stage_sampler(trained_example):
  """`make_stage_sampler` on the example's StageNetwork draws videos of the stage's
  shape in [-1, 1], different per example."""
  setup, state, _, batch, _ = trained_example
  network = StageNetwork(denoisers.build(EXAMPLE_MODEL))
  settings = SampleSettings(sampler="ddim", num_steps=4, guidance_scale=2.0)
  sample = make_stage_sampler(network, diffusion.get_schedule("cosine"), "v", settings)
  shape = (2,) + setup.shapes["video"][0][1:]
  cond = {"text": batch["text_embeddings"][:2], "text_mask": batch["text_mask"][:2]}
  video = np.asarray(sample(state.ema_params, shape, cond, jax.random.PRNGKey(0)))
  assert video.shape == shape
  assert np.all(np.isfinite(video)) and video.min() >= -1.0 and video.max() <= 1.0
  assert _max_diff(video[0], video[1]) > 0.1


def test_image_examples_need_a_denoiser_that_supports_them(monkeypatch):
  """Joint image-video training is refused before any compute for a denoiser without
  SUPPORTS_IMAGES, and such a denoiser is never handed `is_image`."""
  from videojax.nn.unet3d import UNet3D

  monkeypatch.setattr(UNet3D, "SUPPORTS_IMAGES", False)
  config = base_configs.get_config("tiny")
  config.data.image_fraction = 0.5
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  with pytest.raises(ValueError, match=r"image_fraction=0.5 .* does not support is_image"):
    train_setup(config, mesh)
  seen = {}
  monkeypatch.setattr(UNet3D, "apply", lambda self, v, z, l, **kw: seen.update(kw) or z)
  StageNetwork(denoisers.build(config.model)).apply({}, jnp.zeros((1, 4, 8, 8, 3)),
                                                    jnp.zeros((1,)), is_image=jnp.ones(1, bool))
  assert seen["is_image"] is None
