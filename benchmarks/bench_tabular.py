"""Speed of the tabular search's two hot paths, each against its reference measured in the same run.

Run: ``python benchmarks/bench_tabular.py [--space mlp|resnet|ftt] [--n_archs 8] [--check 50] [--torch]``

(100 input columns; for ``ftt`` 20 numeric columns and 8 categorical ones of 10 one-hot columns
each, so 29 tokens with the CLS token.)

1. Energy: the per-layer lookup (``tabular_nas.energy_lut``) on 2,000 random architectures, warm
   (every segment already priced), in architectures/s, against extracting and pricing each
   materialized network whole; and the lookup's relative error against whole-network extraction
   on ``--check`` random architectures (target: >= 1,000 architectures/s, within 2 %).
2. Training: ``--n_archs`` architectures, ``--steps`` steps each, with the masked supernet's train
   step (one compile for all) against a standalone network's train step recompiled per
   architecture (the slicing alternative), both through ``training.step.make_train_step`` on CPU;
   wall time including compiles, and the ratio.
3. With ``--torch`` (mlp and resnet; ``torch`` is the optional ``bench`` extra, see
   ``_torch_darts.py`` for a separate venv): first a check that ``_torch_tabular``'s PyTorch networks
   are the Flax standalone ones (same parameter count on random architectures of both spaces, same
   eval-mode outputs within 1e-5 with the Flax weights and BatchNorm statistics copied in), then,
   in the same run, a plain PyTorch eager train step (AdamW with the same lr and weight decay,
   cross-entropy, the same batch) of each of the same standalone architectures for the same steps,
   on as many threads as this process has cores (printed). Ratios torch eager / masked supernet and
   torch eager / JAX standalone, with compiles included (whole wall time: network construction,
   initialization, compiles, all steps) and excluded (only steps 2.. of each architecture, in all
   three). The three run one after the other, so load changes between them move the ratios.
   Without torch installed, ``--torch`` says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
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

LR = 1e-3
WEIGHT_DECAY = 1e-4  # optax.adamw's default, set explicitly so that torch's AdamW gets the same
TORCH_ATOL = 1e-5


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


def bench_training(space, n_archs: int, steps: int, batch: int,
                   torch_threads: int | None = None) -> None:
  """Masked supernet vs standalone recompiled per arch; with ``torch_threads``, PyTorch eager too."""
  mesh = mesh_lib.make_data_mesh(1)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, space.d_in)).astype(np.float32)
  y = rng.integers(0, space.d_out, batch).astype(np.int32)
  archs = space.sample(rng, n_archs)
  opt = optax.adamw(LR, weight_decay=WEIGHT_DECAY)
  # Seconds of steps 2.. of each architecture (each step waits for its loss: check_finite), so the
  # compiles, which all fall in first steps, are left out.
  steady = {"masked": 0.0, "standalone": 0.0}

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
    for k in range(steps):
      t_step = time.perf_counter()
      state, m = step(state, {"x": x, "y": y, "arch": np.broadcast_to(a, (batch, len(a))).copy()})
      steady["masked"] += (time.perf_counter() - t_step) if k else 0.0
  jax.block_until_ready(m["loss"])
  masked_s = time.perf_counter() - t
  t = time.perf_counter()
  for a in archs:
    module = sn.standalone(space, a)
    state = state_of(module, dict(module.init(jax.random.key(0), x[:2])))
    step = step_lib.make_train_step(make_loss_fn(module, "binclass", False), opt, mesh=mesh,
                                    batch_size=batch)
    for k in range(steps):
      t_step = time.perf_counter()
      state, m = step(state, {"x": x, "y": y})
      steady["standalone"] += (time.perf_counter() - t_step) if k else 0.0
  jax.block_until_ready(m["loss"])
  sliced_s = time.perf_counter() - t
  print(f"training, {space.kind}, {n_archs} archs x {steps} steps, batch {batch}: masked supernet "
        f"{masked_s:.2f} s (one compile) vs standalone recompiled per arch {sliced_s:.2f} s; "
        f"standalone / masked = {sliced_s / masked_s:.2f}")
  if torch_threads is None:
    return
  torch_s, torch_steady = _torch_training(space, archs, x, y, steps, torch_threads)
  n_steady = n_archs * (steps - 1)
  print(f"training vs PyTorch eager, {space.kind}, {n_archs} archs x {steps} steps, batch {batch}, "
        f"torch on {torch_threads} thread(s): torch eager {torch_s:.2f} s in all, "
        f"{torch_steady:.2f} s for steps 2..{steps} of each arch ({n_steady} steps; masked "
        f"{steady['masked']:.2f} s, JAX standalone {steady['standalone']:.2f} s)")
  print(f"  compiles included (whole wall time): torch eager / masked supernet = "
        f"{torch_s / masked_s:.2f}, torch eager / JAX standalone = {torch_s / sliced_s:.2f}")
  print(f"  compiles excluded (steps 2..{steps} of each arch): torch eager / masked supernet = "
        f"{torch_steady / steady['masked']:.2f}, torch eager / JAX standalone = "
        f"{torch_steady / steady['standalone']:.2f}")


def _torch_training(space, archs, x, y, steps: int, threads: int) -> tuple[float, float]:
  """Seconds of a plain PyTorch eager train step of each standalone arch for ``steps`` steps: in all
  (construction included) and for steps 2.. of each arch."""
  import torch  # pylint: disable=g-import-not-at-top
  import _torch_tabular  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
  steady = 0.0
  t = time.perf_counter()
  for a in archs:
    torch.manual_seed(0)
    net = _torch_tabular.standalone(space, a).train()
    # torch's AdamW is optax.adamw's update (decoupled decay lr * wd * p, betas 0.9/0.999, eps 1e-8).
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for k in range(steps):
      t_step = time.perf_counter()
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(net(xt), yt)
      loss.backward()
      opt.step()
      if not math.isfinite(loss.item()):  # as the JAX step's check_finite, one read per step
        raise FloatingPointError(f"torch loss {loss.item()} at step {k}")
      steady += (time.perf_counter() - t_step) if k else 0.0
  return time.perf_counter() - t, steady


def check_torch_twins(d_in: int, d_out: int, n_count: int = 5) -> None:
  """Asserts, and prints, that ``_torch_tabular``'s networks are the Flax standalone ones: same
  parameter count on ``n_count`` random architectures per space, and eval-mode outputs within
  ``TORCH_ATOL`` on one architecture per space with the Flax variables copied in (ResNet: one with
  a BatchNorm block and a block without, with random running statistics)."""
  import torch  # pylint: disable=g-import-not-at-top
  import _torch_tabular  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  x = rng.normal(size=(64, d_in)).astype(np.float32)
  for kind in ("mlp", "resnet"):
    space = make_space(kind, d_in, d_out)
    archs = space.sample(rng, n_count)
    counts = []
    for a in archs:
      shapes = jax.eval_shape(sn.standalone(space, a).init, jax.random.key(0), x[:2])
      n_flax = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
      n_torch = _torch_tabular.count_params(_torch_tabular.standalone(space, a))
      assert n_flax == n_torch, (space.describe(a), n_flax, n_torch)
      counts.append(n_flax)
    a = archs[0]
    while kind == "resnet" and len({b["norm"] for b in space.decode(a)["blocks"]}) < 2:
      a = space.sample(rng)
    module = sn.standalone(space, a)
    variables = jax.device_get(dict(jax.jit(module.init)(jax.random.key(2), x[:2])))
    if "batch_stats" in variables:
      # Running statistics away from their init (0, 1), so that copying them in is checked.
      variables["batch_stats"] = {
          name: {"mean": rng.uniform(-0.5, 0.5, v["mean"].shape).astype(np.float32),
                 "var": rng.uniform(0.5, 1.5, v["var"].shape).astype(np.float32)}
          for name, v in variables["batch_stats"].items()}
    out_flax = np.asarray(module.apply(variables, x))
    net = _torch_tabular.standalone(space, a).eval()
    _torch_tabular.load_flax_variables(net, variables)
    with torch.no_grad():
      out_torch = net(torch.from_numpy(x)).numpy()
    err = float(np.max(np.abs(out_flax - out_torch)))
    assert err <= TORCH_ATOL, (space.describe(a), err)
    print(f"torch twin, {kind}: parameter counts equal Flax's on {n_count} random archs "
          f"({min(counts):,}-{max(counts):,}); eval outputs of {space.describe(a)}, batch 64, "
          f"max |flax - torch| = {err:.1e} (max |out| {np.max(np.abs(out_flax)):.2f}) <= "
          f"{TORCH_ATOL:g}: OK")


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--space", default="mlp", choices=("mlp", "resnet", "ftt"))
  p.add_argument("--n_archs", type=int, default=8)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--check", type=int, default=50)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--only", default="all", choices=("all", "energy", "training"))
  p.add_argument("--torch", action="store_true",
                 help="add a PyTorch eager reference to the training benchmark (mlp, resnet; "
                      "pip install -e '.[bench]')")
  p.add_argument("--torch_threads", type=int, default=0,
                 help="PyTorch's threads; 0: as many as this process's cores")
  args = p.parse_args()
  torch_threads = None
  if args.torch:
    if args.space == "ftt":
      p.error("--torch: there is no PyTorch twin of the ftt space (mlp and resnet only)")
    # PyTorch's OpenMP workers spin at each op's barrier by default; on a machine whose cores other
    # processes also use, a spinning worker waits for a descheduled one and a 2-thread step of a
    # small MLP took 0.45-0.88 s instead of 5-20 ms (load ~4). Passive waiting (read by the OpenMP
    # runtime when torch is loaded, so set before the import) keeps every core usable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      print("--torch: PyTorch is not installed (it is the optional 'bench' extra: pip install -e "
            "'.[bench]'); nothing was run", file=sys.stderr)
      sys.exit(2)
    if args.steps < 2:
      p.error("--torch: needs --steps >= 2 (the compile-excluded times are steps 2..)")
    # By default as many threads as the cores this process (and so JAX's CPU client) may run on.
    cores = len(os.sched_getaffinity(0))
    torch_threads = args.torch_threads or cores
    print(f"PyTorch {torch.__version__}, torch.set_num_threads({torch_threads}) ({cores} cores "
          f"in this process), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    check_torch_twins(100, 2)
  cats = (10,) * 8 if args.space == "ftt" else ()
  space = make_space(args.space, 100, 2, cat_cardinalities=cats)
  if args.only in ("all", "energy"):
    for b in (1, 4096):
      bench_energy(space, b, args.check)
  if args.only in ("all", "training"):
    bench_training(space, args.n_archs, args.steps, args.batch, torch_threads)


if __name__ == "__main__":
  main()
