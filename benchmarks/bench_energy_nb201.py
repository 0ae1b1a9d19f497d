"""Speed of NB201 kernel extraction + energy prediction (composed per op vs whole network).

Run: ``python benchmarks/bench_energy_nb201.py [--cells 60] [--reference 3] [--all]``

Prints:
  1. the first call (lowering the fragments once, then one network), the median over ``--cells``
     distinct random cells of ``nb201_kernels.network_kernels`` + ``predict_energy_j`` (target
     <= 100 ms), and, as the reference in the same process, the median of a whole-network
     ``extract_kernels(..., mode="gpu")`` + prediction over ``--reference`` cells, with the ratio;
  2. the time for all 12,554 HW-NAS-Bench cells with ``--workers`` spawned processes
     (target <= 10 min on 2 cores): measured with ``--all``, else projected from the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from cenas_jax.energy import model as em  # noqa: E402
from cenas_jax.energy import nb201_kernels as nk  # noqa: E402


def _whole_network_s(ops, model) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from cenas_jax.energy import extract_kernels  # pylint: disable=g-import-not-at-top
  from cenas_jax.spaces import nb201_net  # pylint: disable=g-import-not-at-top

  t = time.perf_counter()
  net = nb201_net.make_nb201_net(ops)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  v = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  kernels = extract_kernels(lambda v, x: net.apply(v, x, train=False), v, x, mode="gpu")
  em.predict_energy_j(model, kernels)
  return time.perf_counter() - t


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cells", type=int, default=60, help="distinct random cells timed")
  ap.add_argument("--reference", type=int, default=3, help="whole-network extractions timed")
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--all", action="store_true", help="time all HW-NAS-Bench cells for real")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()

  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top

  table = load_nb201_table()
  hw_ops = table.ops[table.has_hw]
  model = em.prior_model("jetson-tx2")
  rng = np.random.default_rng(args.seed)
  sample = hw_ops[rng.choice(len(hw_ops), args.cells + 1, replace=False)]
  cells = [tuple(int(o) for o in r) for r in sample]

  t = time.perf_counter()
  em.predict_energy_j(model, nk.network_kernels(cells[0]))
  first_s = time.perf_counter() - t
  times, cpu = [], []
  for ops in cells[1:]:
    t, c = time.perf_counter(), time.process_time()
    em.predict_energy_j(model, nk.network_kernels(ops))
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  med, cpu_med = statistics.median(times), statistics.median(cpu)
  ref = [_whole_network_s(ops, model) for ops in cells[1:1 + args.reference]]
  ref_med = statistics.median(ref)
  print(f"first call (fragments + 1 network): {first_s * 1e3:8.1f} ms")
  print(f"composed, median of {len(times)} cells:   {med * 1e3:8.1f} ms  (p90 "
        f"{np.percentile(times, 90) * 1e3:.1f} ms; target <= 100 ms); CPU time median "
        f"{cpu_med * 1e3:.1f} ms")
  print(f"whole network, median of {len(ref)}:      {ref_med * 1e3:8.1f} ms  "
        f"(composed is {ref_med / med:.1f}x faster)")

  n = int(table.has_hw.sum())
  distinct = len({nk.live_ops(tuple(int(o) for o in r)) for r in hw_ops})
  if args.all:
    t = time.perf_counter()
    nk.compute_features(hw_ops, "jetson-tx2", workers=args.workers)
    all_s = time.perf_counter() - t
    print(f"all {n} cells ({distinct} distinct live cells), {args.workers} workers: "
          f"{all_s:.0f} s measured (target <= 600 s)")
  else:
    print(f"all {n} cells ({distinct} distinct live cells), {args.workers} workers: "
          f"~{distinct * med / args.workers:.0f} s projected from the wall median, "
          f"~{distinct * cpu_med / args.workers:.0f} s from the CPU median with {args.workers} "
          "free cores (target <= 600 s; --all measures it)")
  print(f"cpu cores visible: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (wall times "
        "on a shared machine include waiting for a core)")


if __name__ == "__main__":
  main()
