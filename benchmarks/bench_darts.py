"""Throughput of the DARTS supernet and of a standalone DARTS network on this machine (CPU).

Prints images/s of one training step (forward + backward + SGD update, batch ``--batch``) for:

- the supernet as built (``supernets.darts``: stacked edge weights, scan over slots, one-branch
  switch VJP, block-diagonal depthwise convolutions on CPU) against the variants not chosen:
  ``lax.switch``'s own VJP, and shifted / grouped depthwise convolutions;
- the standalone ``NetworkCIFAR`` of DARTS_V2 at the same channels and cells, with the same variants
  of the depthwise convolution;
- optionally a plain PyTorch eager step of the standalone network (``--torch``, if ``torch`` is
  importable; it is not a dependency of the package).

Each ratio is against a reference measured in the same run: the interleaved repeats (``--repeats``)
share the machine's load, and the median is reported.

  python benchmarks/bench_darts.py --channels 8 --layers 5 --batch 32
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cenas_jax.spaces import darts as space
from cenas_jax.spaces import darts_net
from cenas_jax.supernets import darts as sn


def _supernet_step(config, variant):
  impl = variant.get("depthwise", "block_diagonal")
  switch = variant.get("switch", "one_branch")

  def loss(params, arch, x, y):
    with _patched(impl, switch):
      logits, _ = sn.apply(params, arch, x, config)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  opt = optax.sgd(0.01, momentum=0.9)

  @jax.jit
  def step(params, opt_state, key, x, y):
    arch = sn.sample_arch(key)
    grads = jax.grad(loss)(params, arch, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params = sn.init(jax.random.key(0), config)
  return step, params, opt.init(params)


class _patched:
  """Swaps the depthwise implementation and the switch for the duration of a trace."""

  def __init__(self, impl, switch):
    self.impl, self.switch = impl, switch

  def __enter__(self):
    self.saved = (sn.depthwise_conv, sn._switch)
    sn.depthwise_conv = functools.partial(darts_net.depthwise_conv, cpu_impl=self.impl)
    if self.switch == "lax":
      sn._switch = lambda i, branches, *ops: jax.lax.switch(i, branches, *ops)

  def __exit__(self, *exc):
    sn.depthwise_conv, sn._switch = self.saved


def _standalone_step(genotype, channels, layers, impl):
  model = darts_net.NetworkCIFAR(genotype, channels, layers)
  saved = darts_net.depthwise_conv

  def loss(params, stats, x, y):
    darts_net.depthwise_conv = functools.partial(saved, cpu_impl=impl)
    try:
      (logits, _), new = model.apply({"params": params, **stats}, x, train=True, mutable=["batch_stats"],
                                       rngs={"drop_path": jax.random.key(0)})
    finally:
      darts_net.depthwise_conv = saved
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), new

  opt = optax.sgd(0.01, momentum=0.9)

  @jax.jit
  def step(params, opt_state, stats, x, y):
    grads, stats = jax.grad(loss, has_aux=True)(params, stats, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, stats

  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params = variables.pop("params")
  return step, params, opt.init(params), dict(variables)


def _torch_step(genotype, channels, layers, batch, threads):  # pragma: no cover - optional
  import torch  # pylint: disable=g-import-not-at-top
  import _torch_darts  # pylint: disable=g-import-not-at-top
  # On a shared 2-core machine one stalled OpenMP thread holds up every op: with 2 threads a step
  # took 12.2 s, with 1 thread 0.26 s. One thread makes the reference stable.
  torch.set_num_threads(threads)
  print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s)")
  net = _torch_darts.NetworkCIFAR(genotype, channels, layers)
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  x = torch.randn(batch, 3, 32, 32)
  y = torch.randint(0, 10, (batch,))

  def run():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--channels", type=int, default=8)
  parser.add_argument("--layers", type=int, default=5)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch", action="store_true",
                      help="add a PyTorch eager reference (pip install -e '.[bench]')")
  parser.add_argument("--torch_threads", type=int, default=1)
  parser.add_argument("--skip_slow", action="store_true", help="skip the lax.switch and grouped variants")
  args = parser.parse_args()
  config = sn.SupernetConfig(init_channels=args.channels, layers=args.layers)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
  genotype = space.GENOTYPES["DARTS_V2"]

  runners, compile_s = {}, {}
  sn_variants = {"supernet (chosen)": {}, "supernet, shifted depthwise": {"depthwise": "shifted"}}
  sa_variants = {"standalone DARTS_V2 (chosen)": "block_diagonal", "standalone, shifted depthwise": "shifted"}
  if not args.skip_slow:
    sn_variants["supernet, lax.switch VJP"] = {"switch": "lax"}
    sn_variants["supernet, grouped depthwise"] = {"depthwise": "grouped"}
    sa_variants["standalone, grouped depthwise"] = "grouped"
  for name, variant in sn_variants.items():
    step, params, opt_state = _supernet_step(config, variant)
    keys = iter(jax.random.split(jax.random.key(1), 10_000))
    state = {"p": params, "o": opt_state}

    def run(step=step, state=state, keys=keys):
      state["p"], state["o"] = step(state["p"], state["o"], next(keys), x, y)
      jax.block_until_ready(state["p"])

    t = time.perf_counter(); run(); compile_s[name] = time.perf_counter() - t
    runners[name] = run
  for name, impl in sa_variants.items():
    step, params, opt_state, stats = _standalone_step(genotype, args.channels, args.layers, impl)
    state = {"p": params, "o": opt_state, "s": stats}

    def run(step=step, state=state):
      state["p"], state["o"], state["s"] = step(state["p"], state["o"], state["s"], x, y)
      jax.block_until_ready(state["p"])

    t = time.perf_counter(); run(); compile_s[name] = time.perf_counter() - t
    runners[name] = run
  if args.torch:
    try:
      runners["pytorch eager DARTS_V2"] = _torch_step(genotype, args.channels, args.layers, args.batch,
                                                             args.torch_threads)
      compile_s["pytorch eager DARTS_V2"] = 0.0
    except ImportError as e:
      print(f"PyTorch reference skipped: {e}")
  times = {name: [] for name in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      t = time.perf_counter()
      for _ in range(args.steps):
        run()
      times[name].append((time.perf_counter() - t) / args.steps)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); C={args.channels}, "
        f"{args.layers} cells, batch {args.batch}; median of {args.repeats} x {args.steps} steps")
  ref_sn, ref_sa = "supernet (chosen)", "standalone DARTS_V2 (chosen)"
  if "pytorch eager DARTS_V2" in times:
    ratio = statistics.median(times["pytorch eager DARTS_V2"]) / statistics.median(times[ref_sa])
    print(f"JAX standalone vs PyTorch eager: {ratio:.2f}x the images/s")
  for name, ts in times.items():
    med = statistics.median(ts)
    ref = ref_sn if name.startswith("supernet") else ref_sa
    ratio = statistics.median(times[ref]) / med
    print(f"{name:34s} {args.batch / med:8.1f} img/s  step {med * 1e3:8.1f} ms  "
          f"compile {compile_s[name]:6.1f} s  speed vs chosen {ratio:5.2f}x")


if __name__ == "__main__":
  main()
