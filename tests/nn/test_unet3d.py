"""The space-time factorized video U-Net: shapes, independence, causality, masks,
inflation, logical sharding, and input errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unet3d as unet_configs
from videojax.nn.conditioning import FrameConditioning, coordinate_features, place_frames
from videojax.nn.inflation import image_config_of, inflate
from videojax.nn import denoisers
from videojax.nn.stage import StageNetwork
from videojax.nn.unet3d import UNet3D
from videojax.parallel import sharding

TINY = {k: v for k, v in unet_configs.get_config("tiny").model.items() if k != "name"}
B, T, H, W = 2, 4, 8, 8
Z = jax.random.normal(jax.random.PRNGKey(0), (B, T, H, W, 3))
LOGSNR = jnp.array([-2.0, 3.0])
TEXT = jax.random.normal(jax.random.PRNGKey(1), (B, 5, 12))
MASK = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def _perturbed(variables, seed=3, scale=0.2):
  """All parameters moved off their (partly zero) initialisation, as after training.

  Works on abstract shapes too (ShapeDtypeStructs count as zeros), so a model that a
  test only needs "trained" is built with `_random_params`, without compiling an init.
  """
  params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype)
                        if isinstance(x, jax.ShapeDtypeStruct) else x, nn.meta.unbox(variables))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [l + scale * jax.random.normal(k, l.shape, l.dtype)
                                   for k, l in zip(keys, leaves)])


def _random_params(model, *args, **kwargs):
  """Random parameters for `model` from its abstract init (no init compile: fast)."""
  return _perturbed(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args, **kwargs)))


@pytest.fixture(scope="module")
def base():
  model = UNet3D(**TINY)
  variables = jax.jit(lambda r: model.init(r, Z, LOGSNR, text=TEXT, text_mask=MASK))(
      jax.random.PRNGKey(0))
  params = _perturbed(variables)
  apply = jax.jit(lambda p, z, **kw: model.apply(p, z, LOGSNR, **kw))
  return model, variables, params, apply


def test_base_output_shape_dtype_and_zero_init(base):
  model, variables, params, apply = base
  out0 = apply(nn.meta.unbox(variables), Z, text=TEXT, text_mask=MASK)
  assert out0.shape == Z.shape and out0.dtype == jnp.float32
  np.testing.assert_array_equal(out0, 0.0)  # zero-initialised output conv
  out = apply(params, Z, text=TEXT, text_mask=MASK)
  assert np.all(np.isfinite(out)) and float(jnp.abs(out).mean()) > 1e-3


def test_is_image_makes_frames_independent_per_example(base):
  _, _, params, apply = base
  is_image = jnp.array([True, False])
  out = apply(params, Z, text=TEXT, text_mask=MASK, is_image=is_image)
  z2 = Z.at[:, 2].add(1.0)  # change frame 2 of both examples
  out2 = apply(params, z2, text=TEXT, text_mask=MASK, is_image=is_image)
  others = [0, 1, 3]
  np.testing.assert_allclose(out2[0, others], out[0, others], atol=1e-5)  # image: untouched
  assert not np.allclose(out2[1, others], out[1, others], atol=1e-3)  # video: mixed


def test_text_padding_tokens_do_not_matter(base):
  _, _, params, apply = base
  out = apply(params, Z, text=TEXT, text_mask=MASK)
  text2 = TEXT.at[0, 3:].set(50.0)  # example 0's padding tokens
  np.testing.assert_allclose(apply(params, Z, text=text2, text_mask=MASK), out, atol=1e-5)
  text3 = TEXT.at[0, 1].add(1.0)  # a real token does matter
  assert not np.allclose(apply(params, Z, text=text3, text_mask=MASK)[0], out[0], atol=1e-4)


def test_causal_unet_output_frame_ignores_later_frames(base):
  model = UNet3D(**{**TINY, "causal_temporal": True})  # same parameters as the base model
  params = base[2]
  apply = jax.jit(lambda z: model.apply(params, z, LOGSNR, text=TEXT, text_mask=MASK))
  out, out2 = apply(Z), apply(Z.at[:, 2:].add(1.0))
  np.testing.assert_allclose(out2[:, :2], out[:, :2], atol=1e-5)
  assert not np.allclose(out2[:, 2:], out[:, 2:], atol=1e-3)


@pytest.mark.parametrize("cond", ["ssr", "tsr"])
def test_super_resolution_stages(cond):
  model = StageNetwork(UNet3D(**{**TINY, "text_dim": 0}), cond, 2 if cond == "ssr" else 1)
  if cond == "ssr":
    kw = dict(cond_video=jnp.zeros((B, T, H // 2, W // 2, 3)))
  else:
    placed, mask = place_frames(jnp.ones((B, 2, H, W, 3)), T, stride=2)
    kw = dict(cond_video=placed, cond_mask=mask)
  kw["aug_logsnr"] = jnp.zeros((B,))
  # Eager: for one or two calls, compiling costs more than it saves on CPU.
  params = _random_params(model, Z, LOGSNR, **kw)
  apply = lambda kw: model.apply(params, Z, LOGSNR, **kw)  # noqa: E731
  out = apply(kw)
  assert out.shape == Z.shape and out.dtype == jnp.float32 and np.all(np.isfinite(out))
  # The conditioning video is an input: changing it changes the prediction.
  assert not np.allclose(apply({**kw, "cond_video": kw["cond_video"] + 0.5}), out, atol=1e-3)


def test_frame_positions_start_at_zero_change_videos_and_skip_images(base):
  """frame_positions adds a learned [T, C] table after the stem: zero at init (a trained
  model keeps its function when it is added); once trained it changes the prediction of
  video examples, while is_image examples never see it."""
  _, variables, params, apply = base
  model = UNet3D(**{**TINY, "frame_positions": T})
  fresh = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT,
                                            text_mask=MASK))
  with_table = inflate(params, jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                            nn.meta.unbox(fresh)))
  assert with_table["params"]["frame_pos"].shape == (T, TINY["base_channels"])
  run = lambda p, z, **kw: model.apply(p, z, LOGSNR, text=TEXT, text_mask=MASK, **kw)  # noqa: E731
  np.testing.assert_allclose(run(with_table, Z), apply(params, Z, text=TEXT, text_mask=MASK),
                             rtol=1e-5, atol=2e-5)  # eager vs jit: float rounding only
  table = jax.random.normal(jax.random.PRNGKey(7), (T, TINY["base_channels"]))
  trained = {"params": {**with_table["params"], "frame_pos": table}}
  is_image = jnp.array([True, False])
  out = run(trained, Z, is_image=is_image)
  ref = apply(params, Z, text=TEXT, text_mask=MASK, is_image=is_image)
  np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=2e-5)  # the image example
  assert not np.allclose(out[1], ref[1], atol=1e-2)  # the video example
  with pytest.raises(ValueError, match=r"frame-position embeddings for at most 4 frames "
                                       r"\(frame_positions\), got T = 8"):
    model.apply(trained, jnp.concatenate([Z, Z], 1), LOGSNR, text=TEXT, text_mask=MASK)


def test_frame_conditioning_starts_as_identity_then_changes_videos_only(base):
  """frame_conditioning makes the FiLM vector per frame: with its zero-initialised output
  layer a trained model keeps its function exactly (so `train.init_from` can add it);
  once trained it changes video examples and leaves is_image examples alone."""
  _, _, params, apply = base
  model = UNet3D(**{**TINY, "frame_conditioning": True, "frame_field": True})
  added = _random_params(model, Z, LOGSNR, text=TEXT, text_mask=MASK)["params"]["frame_cond"]
  outputs = ("out", "field")
  assert set(added) == {"clip", "text_norm", "tokens", "text", "time", *outputs}
  zeros = {k: jax.tree.map(jnp.zeros_like, added[k]) for k in outputs}  # their init
  with_new = {"params": {**params["params"], "frame_cond": {**added, **zeros}}}
  is_image = jnp.array([True, False])
  run = lambda p: model.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK,  # noqa: E731
                              is_image=is_image)
  ref = apply(params, Z, text=TEXT, text_mask=MASK, is_image=is_image)
  np.testing.assert_allclose(run(with_new), ref, rtol=1e-5, atol=2e-5)
  trained = {"params": {**params["params"], "frame_cond": added}}
  out = run(trained)
  np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=2e-5)  # the image example
  assert not np.allclose(out[1], ref[1], atol=1e-2)  # the video example
  for only in outputs:  # each output alone changes the video example
    one = {"params": {**params["params"], "frame_cond": {**added, **zeros, only: added[only]}}}
    assert not np.allclose(run(one)[1], ref[1], atol=1e-2)
  with pytest.raises(ValueError, match="frame_field is part of frame_conditioning"):
    UNet3D(**{**TINY, "frame_field": True}).init(jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT,
                                                 text_mask=MASK)
  with pytest.raises(ValueError, match="frame_conditioning needs a U-Net without temporal"):
    UNet3D(**{**TINY, "frame_conditioning": True, "temporal_downsample": (True,)}).init(
        jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT, text_mask=MASK)


def test_frame_conditioning_couples_text_time_and_place():
  """What it is for: the effect of the caption differs from frame to frame (text x time)
  and, in the map, from place to place (x space), and reversing time does not undo it,
  so "left" and "right" can ask for different things of frame 0 from the first step."""
  fc = FrameConditioning(16, field_channels=3)
  emb = jax.random.normal(jax.random.PRNGKey(2), (B, 16))
  args = (emb, T, TEXT, MASK)
  size = (H, W)
  variables = _perturbed(jax.eval_shape(lambda: fc.init(jax.random.PRNGKey(0), *args,
                                                        size=size)))
  other = TEXT.at[:, 1].multiply(-1.0)  # one token changed
  (e0, f0), (e1, f1) = (fc.apply(variables, emb, T, t, MASK, size=size)
                        for t in (TEXT, other))
  assert e0.shape == (B, T, 16) and f0.shape == (B, T, H, W, 3)
  for diff in (e1 - e0, f1 - f0):  # [B, T, ...]
    spread = jnp.abs(diff - diff.mean(axis=1, keepdims=True)).max()
    assert float(spread) > 1e-2 * float(jnp.abs(diff).max())  # not the same for every frame
    assert not np.allclose(diff, diff[:, ::-1], atol=1e-3)  # not time-reversal symmetric
  dmap = f1 - f0
  assert not np.allclose(dmap, dmap[:, :, :, ::-1], atol=1e-3)  # left half != right half
  e, f = fc.apply(variables, *args, is_image=jnp.array([True, False]), size=size)
  np.testing.assert_array_equal(e[0], jnp.broadcast_to(emb[0], (T, 16)))
  np.testing.assert_array_equal(f[0], 0.0)
  with pytest.raises(ValueError, match="needs the map's size"):
    fc.apply(variables, *args)


def test_coordinate_features_are_scaled_to_the_frame():
  a, b = coordinate_features(8, 8), coordinate_features(16, 16)
  assert a.shape == (8, 8, 12)
  np.testing.assert_allclose(a[0, 0], b[0, 0], atol=1e-6)  # the same corner at any size
  np.testing.assert_allclose(a[-1, -1], b[-1, -1], atol=1e-6)
  np.testing.assert_allclose(a[:, 0, 0], -a[::-1, 0, 0], atol=1e-6)  # sin(pi y / 2): odd in y
  assert np.all(np.diff(a[:, 0, 0]) > 0)  # and increasing down the frame


def test_inflated_video_model_equals_image_model_frame_by_frame(base):
  video_model, video_variables, _, _ = base  # a fresh video model: real initialisation
  image_model = UNet3D(**image_config_of(TINY))
  # a "trained" image model
  image_params = _random_params(image_model, Z[:, :1], LOGSNR, text=TEXT, text_mask=MASK)
  video_params = nn.meta.unbox(video_variables)
  inflated = inflate(image_params, video_params)
  out = video_model.apply(inflated, Z, LOGSNR, text=TEXT, text_mask=MASK)
  # The image model sees the frames as a batch of B * T one-frame videos.
  frames = Z.reshape(B * T, 1, H, W, 3)
  rep = lambda a: jnp.repeat(a, T, axis=0)  # noqa: E731
  per_frame = image_model.apply(image_params, frames, rep(LOGSNR), text=rep(TEXT),
                                text_mask=rep(MASK))
  np.testing.assert_allclose(out, per_frame.reshape(out.shape), atol=2e-5)
  narrow = jax.eval_shape(lambda: UNet3D(**{**image_config_of(TINY), "base_channels": 8}).init(
      jax.random.PRNGKey(1), Z[:, :1], LOGSNR, text=TEXT, text_mask=MASK))
  with pytest.raises(ValueError, match=r"Parameter shapes differ.*"
                                       r"image \(1, 3, 3, 8, 8\) vs video \(1, 3, 3, 16, 16\)"):
    inflate(nn.meta.unbox(narrow), video_params)


def test_every_parameter_has_logical_axes_and_sharded_forward_matches(base):
  model, variables, params, apply = base
  specs = nn.get_partition_spec(variables)["params"]
  flat = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  unnamed = [s for s in flat if not isinstance(s, jax.sharding.PartitionSpec) or len(s) == 0]
  assert not unnamed and len(flat) == len(jax.tree.leaves(params["params"]))
  mesh = sharding.make_mesh({"data": 4, "tensor": 2})
  shardings = sharding.logical_shardings(variables, mesh)
  sharded = jax.device_put(params, nn.meta.unbox(shardings))
  z4, l4, t4, m4 = (jnp.concatenate([a, a[::-1]]) for a in (Z, LOGSNR, TEXT, MASK))
  put = lambda a: jax.device_put(a, sharding.batch_sharding(mesh, a.ndim))  # noqa: E731
  fwd = lambda p, z, l, t, m: model.apply(p, z, l, text=t, text_mask=m)  # noqa: E731
  with nn.logical_axis_rules(sharding.UNET_RULES), jax.set_mesh(mesh):
    out = jax.jit(fwd)(sharded, put(z4), put(l4), put(t4), put(m4))
  assert len(out.sharding.device_set) == 8
  np.testing.assert_allclose(out, jax.jit(fwd)(params, z4, l4, t4, m4), atol=2e-5)
  kernel = sharded["params"]["down1_0"]["res"]["Conv_0"]["kernel"]
  assert len(kernel.sharding.device_set) == 8


def test_bfloat16_compute_is_finite_and_close_to_float32(base):
  _, _, params, apply = base  # float32 parameters, bfloat16 compute
  ref = apply(params, Z, text=TEXT, text_mask=MASK)
  model = UNet3D(**{**TINY, "dtype": jnp.bfloat16})
  out = jax.jit(lambda p: model.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK))(params)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
  assert float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref)) < 0.05


def test_remat_policies_change_memory_not_results(base):
  _, _, params, _ = base
  def value_and_grad(remat):
    model = UNet3D(**{**TINY, "remat": remat})
    loss = lambda p: jnp.mean(model.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK)**2)  # noqa
    return jax.jit(jax.value_and_grad(loss))(params)
  ref_val, ref_grad = value_and_grad("none")
  for policy in ("full", "save_dots"):
    val, grad = value_and_grad(policy)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5)
    for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
      np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-6)


def test_attention_impl_reaches_every_attention_layer(base):
  """'xla' swaps the CPU's chunked loops for XLA's dense attention in all three blocks:
  same function (values agree), no loop left in the program."""
  _, _, params, apply = base
  ref = apply(params, Z, text=TEXT, text_mask=MASK)
  model = UNet3D(**{**TINY, "attention_impl": "xla"})
  run = lambda p: model.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK)  # noqa: E731
  np.testing.assert_allclose(jax.jit(run)(params), ref, rtol=1e-4, atol=1e-5)
  loops = lambda f: str(jax.make_jaxpr(f)(params)).count(" scan[")  # noqa: E731
  default = UNet3D(**TINY)
  assert loops(lambda p: default.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK)) > 0
  assert loops(run) == 0


@pytest.mark.parametrize("impl, dtype, message", [
    ("flash", jnp.float32, "Unknown attention_impl 'flash'"),
    ("cudnn", jnp.float32, "needs a bfloat16 or float16 compute dtype"),
    ("cudnn", jnp.bfloat16, "needs a GPU"),
])
def test_attention_impl_errors_before_compute(base, impl, dtype, message):
  if message == "needs a GPU" and jax.default_backend() == "gpu":
    pytest.skip("on a GPU cuDNN is available")
  _, _, params, _ = base
  model = UNet3D(**{**TINY, "attention_impl": impl, "dtype": dtype})
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda p: model.apply(p, Z, LOGSNR, text=TEXT, text_mask=MASK), params)


def test_dropout_only_in_training(base):
  model = UNet3D(**{**TINY, "dropout": 0.5})
  _, _, params, _ = base
  run = lambda **kw: model.apply(params, Z, LOGSNR, text=TEXT, text_mask=MASK, **kw)  # noqa: E731
  np.testing.assert_allclose(run(), run(), atol=0)
  a = run(train=True, rngs={"dropout": jax.random.PRNGKey(0)})
  b = run(train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(a, b) and not np.allclose(a, run())


@pytest.mark.parametrize("variant", unet_configs.VARIANTS)
def test_every_config_builds_abstractly(variant):
  cfg = unet_configs.get_config(variant)
  t, h, w, c = cfg.input
  network = StageNetwork(denoisers.build(cfg.model), cfg.kind, 4 if cfg.kind == "ssr" else 1)
  n = network.param_count((1, t, h, w, c), cfg.text_len)
  if cfg.paper_params:  # our widths land within 10% of the paper's counts
    assert 0.9 < n / cfg.paper_params < 1.1, (variant, n)


def test_param_count_from_abstract_shapes(base):
  model, variables, _, _ = base
  n = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(variables)))
  assert StageNetwork(model).param_count(Z.shape, text_len=5) == n


def test_input_errors_name_expected_and_given():
  model = UNet3D(**TINY)
  init = lambda z, **kw: model.init(jax.random.PRNGKey(0), z, LOGSNR, **kw)  # noqa: E731
  with pytest.raises(ValueError, match=r"T, H, W = 4, 7, 8 must be divisible .* 1, 2, 2"):
    init(jnp.zeros((B, T, 7, 8, 3)), text=TEXT, text_mask=MASK)
  with pytest.raises(ValueError,
                     match=r"Expected z of shape \[B, T, H, W, 3\], got \(2, 4, 8, 8, 4\)"):
    init(jnp.zeros((B, T, H, W, 4)), text=TEXT, text_mask=MASK)
  with pytest.raises(ValueError, match=r"Expected text embeddings \[2, L, 12\], got \(2, 5, 7\)"):
    init(Z, text=TEXT[..., :7], text_mask=MASK)
  with pytest.raises(ValueError, match="text-conditioned"):
    init(Z)
  with pytest.raises(ValueError, match="'ssr' stage needs cond_video"):
    StageNetwork(model, "ssr", 2).init(jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT,
                                       text_mask=MASK)
  with pytest.raises(ValueError, match=r"Expected cond \[2, 4, 8, 8, C\] on z's grid"):
    init(Z, text=TEXT, text_mask=MASK, cond=jnp.zeros((B, T, 4, 4, 3)),
         aug_logsnr=jnp.zeros(B))
  with pytest.raises(ValueError, match="cond and aug_logsnr come together"):
    init(Z, text=TEXT, text_mask=MASK, cond=jnp.zeros((B, T, H, W, 3)))
  with pytest.raises(ValueError, match="without temporal down-sampling"):
    UNet3D(**{**TINY, "temporal_downsample": (True,)}).init(
        jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT, text_mask=MASK, is_image=jnp.ones(2, bool))
  with pytest.raises(ValueError, match="Cannot place 3 frames"):
    place_frames(jnp.zeros((1, 3, 4, 4, 3)), 4, stride=2)


def test_temporal_downsampling_and_image_mode_shapes():
  # Abstract evaluation: the shapes and the checks, without compiling a forward pass.
  kw = dict(text=TEXT, text_mask=MASK)
  for fields, t in [({"temporal_downsample": (True,)}, 4), (image_config_of(TINY), 1)]:
    model = UNet3D(**{**TINY, **fields})
    z = jax.ShapeDtypeStruct((B, t, H, W, 3), jnp.float32)
    out = jax.eval_shape(lambda z: model.init_with_output(jax.random.PRNGKey(0), z, LOGSNR,
                                                          **kw)[0], z)
    assert out.shape == z.shape and out.dtype == jnp.float32
  with pytest.raises(ValueError, match=r"T, H, W = 3, 8, 8 must be divisible .* 2, 2, 2"):
    UNet3D(**{**TINY, "temporal_downsample": (True,)}).init(
        jax.random.PRNGKey(0), jnp.zeros((B, 3, H, W, 3)), LOGSNR, **kw)


def _graft(new, old):
  """`new`'s parameters with every one that `old` also has (same path) taken from `old`."""
  flat_old = {path: x for path, x in jax.tree_util.tree_leaves_with_path(old)}
  return jax.tree_util.tree_map_with_path(lambda path, x: flat_old.get(path, x), new)


def test_transformer_block_options_start_as_identity_and_keep_guarantees():
  # diffusers-style blocks: feed-forwards after attention, a 3-conv temporal branch,
  # attention in the middle block although the last level has none.
  kw = dict(text=TEXT, text_mask=MASK)
  plain_fields = {**TINY, "spatial_attn_levels": (0,), "temporal_attn_levels": (0,),
                  "cross_attn_levels": (0,)}
  plain = UNet3D(**plain_fields)
  plain_params = _random_params(plain, Z, LOGSNR, **kw)["params"]
  ff = UNet3D(**plain_fields, attn_ff_mult=2, mid_attn=True)
  params = nn.meta.unbox(jax.jit(lambda r: ff.init(r, Z, LOGSNR, **kw))(
      jax.random.PRNGKey(0)))["params"]
  assert {"spatial_ff", "temporal_ff", "spatial_attn", "cross_attn"} <= set(params["down0_0"])
  assert {"spatial_attn", "temporal_attn", "cross_attn", "temporal_ff"} <= set(params["mid_0"])
  assert "spatial_attn" not in params["mid_1"] and "spatial_attn" not in params["down1_0"]
  # The new layers are zero-initialised: with the plain model's (trained) parameters
  # grafted in, the model computes the plain model's function.
  np.testing.assert_allclose(
      jax.jit(lambda p: ff.apply({"params": p}, Z, LOGSNR, **kw))(_graft(params, plain_params)),
      jax.jit(lambda p: plain.apply({"params": p}, Z, LOGSNR, **kw))(plain_params), atol=1e-5)

  # With a 3-conv temporal branch too, trained: images stay independent frames and a
  # causal model's frames ignore later ones.
  fields = {**plain_fields, "attn_ff_mult": 2, "mid_attn": True, "temporal_conv_layers": 3}
  model = UNet3D(**fields)
  trained = _random_params(model, Z, LOGSNR, **kw)
  assert "Conv_2" in trained["params"]["down0_0"]["res"]["TemporalConv_0"]
  apply = jax.jit(lambda z, m=model, **k: m.apply(trained, z, LOGSNR, **kw, **k),
                  static_argnames="m")
  is_image = jnp.array([True, False])
  out, out2 = apply(Z, is_image=is_image), apply(Z.at[:, 2].add(1.0), is_image=is_image)
  np.testing.assert_allclose(out2[0, [0, 1, 3]], out[0, [0, 1, 3]], atol=1e-5)
  assert not np.allclose(out2[1, [0, 1, 3]], out[1, [0, 1, 3]], atol=1e-3)
  causal = UNet3D(**{**fields, "causal_temporal": True})
  out, out2 = apply(Z, m=causal), apply(Z.at[:, 2:].add(1.0), m=causal)
  np.testing.assert_allclose(out2[:, :2], out[:, :2], atol=1e-5)
  assert not np.allclose(out2[:, 2:], out[:, 2:], atol=1e-3)
  with pytest.raises(ValueError, match="attn_ff_mult must be 0"):
    UNet3D(**{**fields, "attn_ff_mult": -1}).init(jax.random.PRNGKey(0), Z, LOGSNR, **kw)
  with pytest.raises(ValueError, match="temporal_conv_layers must be at least 1, got 0"):
    UNet3D(**{**fields, "temporal_conv_layers": 0}).init(jax.random.PRNGKey(0), Z, LOGSNR,
                                                          **kw)
