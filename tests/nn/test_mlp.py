"""The toy MLP denoiser and shared layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from videojax.nn.layers import sinusoidal_embedding
from videojax.nn.mlp import MLPDenoiser


def test_sinusoidal_embedding_closed_form():
  x = jnp.array([0.0, 1.0, 250.0])
  emb = sinusoidal_embedding(x, 8, max_period=10_000.0)
  freqs = np.exp(-np.log(10_000.0) * np.arange(4) / 4)
  np.testing.assert_allclose(emb, np.concatenate([np.sin(np.outer(x, freqs)),
                                                  np.cos(np.outer(x, freqs))], 1), atol=1e-4)
  with pytest.raises(ValueError, match="even dim"):
    sinusoidal_embedding(x, 7)


def test_mlp_params_carry_logical_axes_and_output_starts_at_zero():
  model = MLPDenoiser(features=2, width=16, depth=1, emb_dim=8, num_classes=3)
  z, logsnr, labels = jnp.ones((4, 2)), jnp.zeros((4,)), jnp.array([0, 1, 2, 3])
  variables = model.init(jax.random.PRNGKey(0), z, logsnr, labels)
  specs = nn.get_partition_spec(variables)["params"]
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  n_params = len(jax.tree.leaves(nn.meta.unbox(variables)))
  # every parameter except LayerNorm scales/biases has named axes
  named = [s for s in leaves if any(a is not None for a in s)]
  assert len(named) >= n_params - 4, (len(named), n_params)
  out = model.apply(variables, z, logsnr, labels)
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised output layer


def test_mlp_bad_inputs():
  model = MLPDenoiser(features=2, width=8, depth=1, emb_dim=8, num_classes=2)
  with pytest.raises(ValueError, match=r"expects z of shape \[B, 2\]"):
    model.init(jax.random.PRNGKey(0), jnp.ones((4, 3)), jnp.zeros((4,)), jnp.zeros(4, int))
  with pytest.raises(ValueError, match="class-conditional: pass labels"):
    model.init(jax.random.PRNGKey(0), jnp.ones((4, 2)), jnp.zeros((4,)))
