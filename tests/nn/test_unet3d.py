"""The space-time factorized video U-Net: shapes, independence, causality, masks,
inflation, logical sharding, and input errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.nn.conditioning import place_frames
from videojax.nn.inflation import image_config_of, inflate
from videojax.nn.unet3d import UNet3D, count_params
from videojax.parallel import sharding

TINY = dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_dim=8,
            temporal_conv_levels=(0, 1), spatial_attn_levels=(1,), temporal_attn_levels=(0, 1),
            cross_attn_levels=(1,), temporal_downsample=(False,), text_dim=12)
B, T, H, W = 2, 4, 8, 8
Z = jax.random.normal(jax.random.PRNGKey(0), (B, T, H, W, 3))
LOGSNR = jnp.array([-2.0, 3.0])
TEXT = jax.random.normal(jax.random.PRNGKey(1), (B, 5, 12))
MASK = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def _perturbed(variables, seed=3, scale=0.2):
  """All parameters moved off their (partly zero) initialisation, as after training."""
  params = nn.meta.unbox(variables)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [l + scale * jax.random.normal(k, l.shape, l.dtype)
                                   for k, l in zip(keys, leaves)])


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


def test_causal_unet_output_frame_ignores_later_frames():
  model = UNet3D(**{**TINY, "causal_temporal": True})
  params = _perturbed(jax.jit(lambda r: model.init(r, Z, LOGSNR, text=TEXT, text_mask=MASK))(
      jax.random.PRNGKey(0)))
  apply = jax.jit(lambda z: model.apply(params, z, LOGSNR, text=TEXT, text_mask=MASK))
  out, out2 = apply(Z), apply(Z.at[:, 2:].add(1.0))
  np.testing.assert_allclose(out2[:, :2], out[:, :2], atol=1e-5)
  assert not np.allclose(out2[:, 2:], out[:, 2:], atol=1e-3)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("cond", ["ssr", "tsr"])
def test_super_resolution_stages(cond, dtype):
  model = UNet3D(**{**TINY, "cond": cond, "text_dim": 0, "dtype": dtype})
  if cond == "ssr":
    kw = dict(cond_video=jnp.zeros((B, T, H // 2, W // 2, 3)))
  else:
    placed, mask = place_frames(jnp.ones((B, 2, H, W, 3)), T, stride=2)
    kw = dict(cond_video=placed, cond_mask=mask)
  kw["aug_logsnr"] = jnp.zeros((B,))
  variables = model.init(jax.random.PRNGKey(0), Z, LOGSNR, **kw)
  params = _perturbed(variables)
  out = model.apply(params, Z, LOGSNR, **kw)
  assert out.shape == Z.shape and out.dtype == jnp.float32 and np.all(np.isfinite(out))
  # The conditioning video is an input: changing it changes the prediction.
  kw2 = {**kw, "cond_video": kw["cond_video"] + 0.5}
  assert not np.allclose(model.apply(params, Z, LOGSNR, **kw2), out, atol=1e-3)


def test_inflated_video_model_equals_image_model_frame_by_frame():
  video_model = UNet3D(**TINY)
  image_model = UNet3D(**image_config_of(TINY))
  img_vars = image_model.init(jax.random.PRNGKey(1), Z[:, :1], LOGSNR, text=TEXT,
                              text_mask=MASK)
  image_params = _perturbed(img_vars)  # a "trained" image model
  video_params = nn.meta.unbox(video_model.init(jax.random.PRNGKey(2), Z, LOGSNR, text=TEXT,
                                                text_mask=MASK))
  inflated = inflate(image_params, video_params)
  out = video_model.apply(inflated, Z, LOGSNR, text=TEXT, text_mask=MASK)
  for t in range(T):
    frame = image_model.apply(image_params, Z[:, t:t + 1], LOGSNR, text=TEXT, text_mask=MASK)
    np.testing.assert_allclose(out[:, t:t + 1], frame, atol=2e-5)
  with pytest.raises(ValueError, match="Parameter shapes differ"):
    inflate(_perturbed(UNet3D(**{**image_config_of(TINY), "base_channels": 8}).init(
        jax.random.PRNGKey(1), Z[:, :1], LOGSNR, text=TEXT, text_mask=MASK)), video_params)


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


def test_param_count_from_abstract_shapes(base):
  model, variables, _, _ = base
  n = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(variables)))
  assert count_params(model, Z.shape, text_len=5) == n


def test_input_errors_name_expected_and_given():
  model = UNet3D(**TINY)
  init = lambda z, **kw: model.init(jax.random.PRNGKey(0), z, LOGSNR, **kw)  # noqa: E731
  with pytest.raises(ValueError, match=r"T, H, W = 4, 6, 8 must be divisible .* 1, 2, 2"):
    init(jnp.zeros((B, T, 6, 8, 3)), text=TEXT, text_mask=MASK)
  with pytest.raises(ValueError, match=r"Expected z of shape \[B, T, H, W, 3\], got \(2, 4, 8, 8, 4\)"):
    init(jnp.zeros((B, T, H, W, 4)), text=TEXT, text_mask=MASK)
  with pytest.raises(ValueError, match=r"Expected text embeddings \[2, L, 12\], got \(2, 5, 7\)"):
    init(Z, text=TEXT[..., :7], text_mask=MASK)
  with pytest.raises(ValueError, match="text-conditioned"):
    init(Z)
  with pytest.raises(ValueError, match="'ssr' stage needs cond_video"):
    UNet3D(**{**TINY, "cond": "ssr"}).init(jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT,
                                           text_mask=MASK)
  with pytest.raises(ValueError, match="without temporal down-sampling"):
    UNet3D(**{**TINY, "temporal_downsample": (True,)}).init(
        jax.random.PRNGKey(0), Z, LOGSNR, text=TEXT, text_mask=MASK, is_image=jnp.ones(2, bool))
  with pytest.raises(ValueError, match="Cannot place 3 frames"):
    place_frames(jnp.zeros((1, 3, 4, 4, 3)), 4, stride=2)
