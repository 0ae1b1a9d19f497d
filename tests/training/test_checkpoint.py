"""Tests for cenas_jax.training.checkpoint."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cenas_jax.carbon import ledger as lg
from cenas_jax.training.checkpoint import Checkpointer, CheckpointError

Opt = collections.namedtuple("Opt", ["mu", "count"])


def _state(scale: float = 1.0):
  return {
      "params": {"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": np.ones(3, np.float32) * scale},
      "opt": Opt(mu=[jnp.zeros(2) + scale], count=jnp.asarray(int(scale), jnp.int32)),
      "rng": jax.random.key(int(scale)),
      "keys": jax.random.split(jax.random.key(7), 3),
      "step": int(scale),
  }


def _assert_state_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(jax.random.key_data(x), jax.random.key_data(y))
    else:
      assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_target_and_side_state(tmp_path):
  led = lg.ledger_add(lg.empty_ledger(), t_start_s=0.0, duration_s=60.0, n_gpus=2, kind="training",
                      power_w=300.0, ci_g_per_kwh=210.0)
  side = {"hour": 3, "queue": [[1, 2], [3]], "ledger": led.to_dict(),
          "np_rng": jax.random.key_data(jax.random.key(5)).tolist()}
  with Checkpointer(tmp_path / "ck") as ck:
    assert ck.latest_step() is None
    assert ck.save(0, _state(2.0), side_state=side)
  with Checkpointer(tmp_path / "ck") as ck:  # a fresh process would do this
    assert ck.latest_step() == 0
    r = ck.restore(target=_state(0.0))
  assert r.step == 0 and r.skipped_steps == ()
  _assert_state_equal(r.state, _state(2.0))
  assert isinstance(r.state["step"], int) and isinstance(r.state["params"]["b"], np.ndarray)
  assert r.state["rng"].dtype == jax.random.key(0).dtype
  # The restored key produces the same numbers as the original.
  np.testing.assert_array_equal(jax.random.normal(r.state["rng"], (3,)),
                                jax.random.normal(jax.random.key(2), (3,)))
  assert r.side_state == json.loads(json.dumps(side))
  back = lg.from_dict(r.side_state["ledger"])
  assert lg.totals(back).carbon_g == pytest.approx(lg.totals(led).carbon_g)


def test_restore_with_abstract_target_and_without_target(tmp_path):
  with Checkpointer(tmp_path) as ck:
    ck.save(1, _state(3.0), force=True)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array)
        else jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), _state(0.0))
    assert abstract["rng"].dtype == jax.random.key(0).dtype
    r = ck.restore(target=abstract)
    np.testing.assert_array_equal(r.state["params"]["w"], _state(3.0)["params"]["w"])
    np.testing.assert_array_equal(jax.random.key_data(r.state["keys"]),
                                  jax.random.key_data(_state(3.0)["keys"]))
    raw = ck.restore()
    assert raw.state["rng"].dtype == jax.random.key(0).dtype
    np.testing.assert_array_equal(np.asarray(raw.state["opt"]["mu"][0]), np.full(2, 3.0))


def test_interval_keep_last_k_and_latest(tmp_path):
  with Checkpointer(tmp_path, save_interval_steps=2, max_to_keep=2) as ck:
    written = [ck.save(s, _state(float(s)), side_state={"s": s}) for s in range(7)]
    assert written == [True, False, True, False, True, False, True]
    assert ck.all_steps() == [4, 6] and ck.latest_step() == 6
    assert ck.save(7, _state(7.0), force=True)
    assert ck.all_steps() == [6, 7]
  with Checkpointer(tmp_path, save_interval_steps=2, max_to_keep=2) as ck:
    r = ck.restore(target=_state(0.0))
    assert r.step == 7 and r.side_state == {}
    assert r.state["step"] == 7
    assert ck.restore(6, target=_state(0.0)).side_state == {"s": 6}
    with pytest.raises(CheckpointError, match="already holds step 7"):
      ck.save(7, _state(1.0), force=True)
    with pytest.raises(CheckpointError, match="Step 4 is not in"):
      ck.restore(4)


def test_empty_state_and_bad_side_state(tmp_path):
  with Checkpointer(tmp_path) as ck:
    ck.save(0, {}, side_state={"only": "json"})
    assert ck.restore().side_state == {"only": "json"}
    with pytest.raises(CheckpointError, match="JSON-safe"):
      ck.save(1, {}, side_state={"x": float("nan")})
    with pytest.raises(CheckpointError, match="JSON-safe"):
      ck.save(1, {}, side_state={"x": np.arange(2)})
    assert ck.all_steps() == [0]
  with pytest.raises(CheckpointError, match="No checkpoint"):
    Checkpointer(tmp_path / "none").restore()


def test_incompatible_target_names_directory(tmp_path):
  with Checkpointer(tmp_path) as ck:
    ck.save(0, _state(1.0))
    wrong_shape = _state(1.0)
    wrong_shape["params"]["w"] = jnp.zeros((3, 3))
    with pytest.raises(CheckpointError, match=r"0 is incompatible.*params/w.*float32\[2, 3\]"):
      ck.restore(target=wrong_shape)
    wrong_dtype = _state(1.0)
    wrong_dtype["params"]["b"] = np.ones(3, np.int32)
    with pytest.raises(CheckpointError, match="params/b"):
      ck.restore(target=wrong_dtype, fall_back_to_previous=True)
    missing = _state(1.0)
    del missing["rng"]
    with pytest.raises(CheckpointError, match="rng: in checkpoint, not in target"):
      ck.restore(target=missing)


def _corrupt(step_dir):
  files = [p for p in (step_dir / "state" / "d").iterdir() if p.is_file()]
  assert files
  for p in files:
    p.write_bytes(p.read_bytes()[:3])


# Orbax's reader leaves sibling tasks' exceptions unretrieved when one array fails to read.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_step_raises_or_falls_back_loudly(tmp_path):
  with Checkpointer(tmp_path, max_to_keep=3) as ck:
    for s in (1, 2):
      ck.save(s, _state(float(s)), side_state={"s": s})
  _corrupt(tmp_path / "2")
  with Checkpointer(tmp_path) as ck:
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/2 is corrupt.*previous step is 1"):
      ck.restore(target=_state(0.0))
    with pytest.warns(RuntimeWarning, match="Falling back"):
      r = ck.restore(target=_state(0.0), fall_back_to_previous=True)
    assert r.step == 1 and r.skipped_steps == (2,) and r.side_state == {"s": 1}
    assert r.state["step"] == 1
  (tmp_path / "1" / "extra" / "metadata").unlink()
  with Checkpointer(tmp_path) as ck:
    with pytest.warns(RuntimeWarning):
      with pytest.raises(CheckpointError, match="No readable checkpoint"):
        ck.restore(target=_state(0.0), fall_back_to_previous=True)


def test_kill_right_after_save_leaves_a_complete_step(tmp_path):
  code = textwrap.dedent(f"""
      import os, signal
      import jax.numpy as jnp
      from cenas_jax.training.checkpoint import Checkpointer
      ck = Checkpointer({str(tmp_path)!r})
      ck.save(0, {{"w": jnp.arange(1000.0)}}, side_state={{"done": True}})
      os.kill(os.getpid(), signal.SIGKILL)
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120,
                        check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  with Checkpointer(tmp_path) as ck:
    r = ck.restore(target={"w": jnp.zeros(1000)})
  assert r.side_state == {"done": True}
  np.testing.assert_array_equal(r.state["w"], np.arange(1000.0))
