"""Layers shared by the masked supernets and the standalone networks they materialize into.

The supernet and the standalone network use the *same* BatchNorm code, so that a sliced network
reproduces the supernet to float rounding: statistics are weighted means over the real rows (padding
rows have weight 0), the running averages move only when ``update`` is true (a block whose norm was
not sampled, or that lies beyond the sampled depth, keeps its statistics), and features are
independent, so slicing the first ``d`` features of the scale, bias and statistics is exact.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cenas_jax.training.mesh import like_batch


class MaskableBatchNorm(nn.Module):
  """BatchNorm over rows with per-row weights and a gate on the running-average update.

  Attributes:
    features: number of features.
    momentum: running-average decay.
    epsilon: added to the variance.
  """

  features: int
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, row_weights: jax.Array | None = None,
               update: jax.Array | bool = True) -> jax.Array:
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (self.features,))
    if train:
      w = jnp.ones(x.shape[0], x.dtype) if row_weights is None else row_weights.astype(x.dtype)
      total = jnp.maximum(jnp.sum(w), 1.0)
      mean = jnp.sum(w[:, None] * x, axis=0) / total
      var = jnp.sum(w[:, None] * jnp.square(x - mean), axis=0) / total
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = jnp.where(update, m * ra_mean.value + (1 - m) * mean, ra_mean.value)
        ra_var.value = jnp.where(update, m * ra_var.value + (1 - m) * var, ra_var.value)
    else:
      mean, var = ra_mean.value, ra_var.value
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def row_dropout(module: nn.Module, x: jax.Array, rate: jax.Array, train: bool) -> jax.Array:
  """Inverted dropout with a per-row rate (B,) or one rate, drawing from the module's ``dropout`` stream.

  In inference mode it is the identity, as ``nn.Dropout``; in training the kept units are scaled by
  ``1 / (1 - rate)`` of their row.
  """
  if not train:
    return x
  rate = jnp.broadcast_to(jnp.asarray(rate, x.dtype), x.shape[:1])
  keep_p = (1.0 - rate)[:, None]
  # Drawn with the batch's sharding: a replicated mask next to a data-sharded batch is an error
  # under explicit sharding.
  u = jax.random.uniform(module.make_rng("dropout"), x.shape, x.dtype,
                         out_sharding=like_batch(x, x.ndim))
  return jnp.where(u < keep_p, x / keep_p, jnp.zeros_like(x))
