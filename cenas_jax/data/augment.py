"""CIFAR-style data augmentation as pure JAX functions of an RNG key (jit- and vmap-friendly).

The DARTS recipe: random crop of a 4-pixel zero-padded image, horizontal flip with probability 1/2,
then cutout (one ``length x length`` square, centred anywhere in the image and clipped at its
border, set to zero) after normalization. Every function takes a batch ``(B, H, W, C)`` and draws
independent choices per image, so a whole batch is augmented on the device in one call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cenas_jax.training.mesh import like_batch

# Per-channel statistics of the CIFAR-10 training set (the values the DARTS recipe normalizes with).
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


def normalize(images_uint8: jax.Array, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> jax.Array:
  """uint8 ``(B, H, W, 3)`` -> float32 standardized per channel."""
  x = images_uint8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop(key: jax.Array, x: jax.Array, padding: int = 4) -> jax.Array:
  """Crops each image at a uniform offset out of its zero-padded copy (same output size)."""
  b, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1, out_sharding=like_batch(x, 2))

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1), out_sharding=like_batch(x, 4))
  return jnp.where(flip, x[:, :, ::-1, :], x)


def cutout(key: jax.Array, x: jax.Array, length: int = 16) -> jax.Array:
  """Zeroes one ``length x length`` square per image, centred uniformly (clipped at the border)."""
  b, h, w, _ = x.shape
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (b, 1, 1), 0, h, out_sharding=like_batch(x, 3))
  cx = jax.random.randint(kx, (b, 1, 1), 0, w, out_sharding=like_batch(x, 3))
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  y0, x0 = cy - length // 2, cx - length // 2
  mask = (rows >= y0) & (rows < y0 + length) & (cols >= x0) & (cols < x0 + length)
  return jnp.where(mask[..., None], 0.0, x).astype(x.dtype)


def augment_cifar(key: jax.Array, images_uint8: jax.Array, *, cutout_length: int = 16,
                  crop_padding: int = 4) -> jax.Array:
  """The training pipeline: crop, flip, normalize, cutout (``cutout_length=0`` turns it off)."""
  k_crop, k_flip, k_cut = jax.random.split(key, 3)
  x = random_flip(k_flip, random_crop(k_crop, images_uint8, crop_padding))
  x = normalize(x)
  return cutout(k_cut, x, cutout_length) if cutout_length > 0 else x
