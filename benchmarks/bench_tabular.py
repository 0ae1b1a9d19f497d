"""Speed of the tabular search's two hot paths, each against its reference measured in the same run.

Run: ``python benchmarks/bench_tabular.py [--space mlp|resnet|ftt] [--n_archs 8] [--check 50]``

(100 input columns; for ``ftt`` 20 numeric columns and 8 categorical ones of 10 one-hot columns
each, so 29 tokens with the CLS token.)

1. Energy: the per-layer lookup (``tabular_nas.energy_lut``) on 2,000 random architectures, warm
   (every segment already priced), in architectures/s, against extracting and pricing each
   materialized network whole; and the lookup's relative error against whole-network extraction
   on ``--check`` random architectures (target: >= 1,000 architectures/s, within 2 %).
2. Training: ``--n_archs`` architectures, ``--steps`` steps each, with the masked supernet's train
   step (one compile for all) against a standalone network's train step recompiled per
   architecture (the slicing alternative), both through ``training.step.make_train_step`` on CPU;
   wall time including compiles, and the ratio. (A PyTorch eager reference is not included: PyTorch
   is not installed in this environment.)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from cenas_jax import energy  # noqa: E402
from cenas_jax.spaces.tabular import make_space  # noqa: E402
from cenas_jax.supernets import tabular as sn  # noqa: E402
from cenas_jax.tabular_nas import energy_lut  # noqa: E402
from cenas_jax.tabular_nas.search import make_loss_fn  # noqa: E402
from cenas_jax.training import mesh as mesh_lib  # noqa: E402
from cenas_jax.training import step as step_lib  # noqa: E402


def bench_energy(space, batch: int, n_check: int) -> None:
  model = energy.prior_model("h100-sxm")
  lut = energy_lut.EnergyLookup(space, model, batch)
  rng = np.random.default_rng(0)
  archs = space.sample(rng, 2000)
  t = time.perf_counter()
  lut.energy_j(archs)
  fill_s = time.perf_counter() - t
  lut.clear_memo()  # time the segment sums, not the per-architecture memo
  t = time.perf_counter()
  lut.energy_j(archs)
  warm = 2000 / (time.perf_counter() - t)
  check_archs = space.sample(rng, n_check)
  t = time.perf_counter()
  check = energy_lut.check_against_whole_network(lut, check_archs)
  whole = n_check / (time.perf_counter() - t)
  print(f"energy lookup, {space.kind}, batch {batch}: {warm:,.0f} archs/s warm "
        f"({lut.extractions} segments extracted in {fill_s:.1f} s to fill); whole-network "
        f"extraction {whole:.2f} archs/s; ratio {warm / whole:,.0f}x; lookup vs whole network on "
        f"{n_check} archs: max rel err {check['max_rel_err']:.4%}, median "
        f"{check['median_rel_err']:.4%}")


def bench_training(space, n_archs: int, steps: int, batch: int) -> None:
  mesh = mesh_lib.make_data_mesh(1)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, space.d_in)).astype(np.float32)
  y = rng.integers(0, space.d_out, batch).astype(np.int32)
  archs = space.sample(rng, n_archs)
  opt = optax.adamw(1e-3)

  def state_of(module, variables):
    return step_lib.init_train_state(variables["params"], opt, jax.random.key(1), mesh=mesh,
                                     model_state={k: v for k, v in variables.items()
                                                  if k != "params"})

  t = time.perf_counter()
  module = sn.supernet(space)
  state = state_of(module, sn.init_supernet(space, jax.random.key(0)))
  step = step_lib.make_train_step(make_loss_fn(module, "binclass", True), opt, mesh=mesh,
                                  batch_size=batch)
  for a in archs:
    for _ in range(steps):
      state, m = step(state, {"x": x, "y": y, "arch": np.broadcast_to(a, (batch, len(a))).copy()})
  jax.block_until_ready(m["loss"])
  masked_s = time.perf_counter() - t
  t = time.perf_counter()
  for a in archs:
    module = sn.standalone(space, a)
    state = state_of(module, dict(module.init(jax.random.key(0), x[:2])))
    step = step_lib.make_train_step(make_loss_fn(module, "binclass", False), opt, mesh=mesh,
                                    batch_size=batch)
    for _ in range(steps):
      state, m = step(state, {"x": x, "y": y})
  jax.block_until_ready(m["loss"])
  sliced_s = time.perf_counter() - t
  print(f"training, {space.kind}, {n_archs} archs x {steps} steps, batch {batch}: masked supernet "
        f"{masked_s:.2f} s (one compile) vs standalone recompiled per arch {sliced_s:.2f} s; "
        f"standalone / masked = {sliced_s / masked_s:.2f}")


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--space", default="mlp", choices=("mlp", "resnet", "ftt"))
  p.add_argument("--n_archs", type=int, default=8)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--check", type=int, default=50)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--only", default="all", choices=("all", "energy", "training"))
  args = p.parse_args()
  cats = (10,) * 8 if args.space == "ftt" else ()
  space = make_space(args.space, 100, 2, cat_cardinalities=cats)
  if args.only in ("all", "energy"):
    for b in (1, 4096):
      bench_energy(space, b, args.check)
  if args.only in ("all", "training"):
    bench_training(space, args.n_archs, args.steps, args.batch)


if __name__ == "__main__":
  main()
