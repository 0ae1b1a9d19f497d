"""On-device CIFAR augmentation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.data import augment


def _images(b=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 256, size=(b, 32, 32, 3)), jnp.uint8)


def test_crop_is_a_window_of_the_padded_image():
  x = _images()
  y = np.asarray(augment.random_crop(jax.random.key(0), x, padding=4))
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  offsets = set()
  for i in range(len(x)):
    hits = [(dy, dx) for dy in range(9) for dx in range(9)
            if np.array_equal(padded[i, dy:dy + 32, dx:dx + 32], y[i])]
    assert hits, f"image {i} is not a crop"
    offsets.add(hits[0])
  assert len(offsets) > 4  # offsets are drawn per image


def test_flip_mirrors_about_half():
  x = _images(400)
  y = np.asarray(augment.random_flip(jax.random.key(1), x))
  same = np.all(y == np.asarray(x), axis=(1, 2, 3))
  mirrored = np.all(y == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert 0.4 < mirrored.mean() < 0.6


def test_cutout_zeroes_one_clipped_square():
  x = jnp.ones((500, 32, 32, 3))
  y = np.asarray(augment.cutout(jax.random.key(2), x, 16))
  zeros = (y[..., 0] == 0)
  assert zeros.sum(axis=(1, 2)).max() == 256 and zeros.sum(axis=(1, 2)).min() >= 64  # 16x16, or clipped
  rows = zeros.any(axis=2)
  assert all(np.ptp(np.flatnonzero(r)) + 1 == r.sum() for r in rows)  # one contiguous band
  assert (y[..., 0] == y[..., 2]).all()  # all channels


def test_pipeline_is_deterministic_jittable_and_normalized():
  x = _images(64)
  f = jax.jit(augment.augment_cifar)
  a, b = f(jax.random.key(3), x), f(jax.random.key(3), x)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (64, 32, 32, 3) and a.dtype == jnp.float32
  c = augment.augment_cifar(jax.random.key(4), x, cutout_length=0)
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  n = np.asarray(augment.normalize(jnp.full((1, 2, 2, 3), 255, jnp.uint8)))
  np.testing.assert_allclose(n[0, 0, 0], (1 - np.array(augment.CIFAR10_MEAN)) / np.array(augment.CIFAR10_STD),
                             rtol=1e-6)
