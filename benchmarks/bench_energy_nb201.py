"""Speed of NB201 kernel extraction + energy prediction (composed per op vs whole network).

Run: ``python benchmarks/bench_energy_nb201.py [--cells 60] [--reference 3] [--workers 2] [--all]``

Prints the two numbers of the issue's speed target:

1. One network: the first call (lowering the fragments once, then one network), then the median
   over ``--cells`` random cells with distinct live cells (so none is a cache hit) of
   ``nb201_kernels.network_kernels`` + ``predict_energy_j`` (target <= 10 ms), in wall and CPU
   time; as the reference in the same process, the median of a whole-network
   ``extract_kernels(..., mode="gpu")`` + prediction over ``--reference`` cells, with the ratio.
2. All 12,554 HW-NAS-Bench cells with ``--workers`` processes (target <= 10 min on 2 cores):
   - always a *projection*: measured worker start-up (wall time of ``compute_features`` on one new
     cell per worker: spawn, imports, fragment lowering) + the distinct live cells x the measured
     mean CPU time of one ``network_features`` row (what a worker computes per cell; the mean, not
     the median, since a total is projected) / workers. It assumes ``--workers`` free cores;
   - with ``--all``, the real run: ``nb201_kernels.compute_features`` on every cell with
     ``--workers`` processes, its wall time and the CPU time its workers used.

On a shared machine wall times include waiting for a core; CPU times do not.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from cenas_jax.energy import model as em  # noqa: E402
from cenas_jax.energy import nb201_kernels as nk  # noqa: E402

SPEC = "jetson-tx2"


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


def _children_cpu_s() -> float:
  """CPU seconds (user + system) of the terminated, waited-for child processes so far."""
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _distinct_live_sample(hw_ops: np.ndarray, n: int, seed: int) -> list[tuple[int, ...]]:
  """``n`` random cells of ``hw_ops`` whose live cells are pairwise distinct."""
  rng = np.random.default_rng(seed)
  cells, seen = [], set()
  for i in rng.permutation(len(hw_ops)):
    ops = tuple(int(o) for o in hw_ops[i])
    live = nk.live_ops(ops)
    if live not in seen:
      seen.add(live)
      cells.append(ops)
      if len(cells) == n:
        break
  return cells


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cells", type=int, default=60, help="distinct random cells timed")
  ap.add_argument("--reference", type=int, default=3, help="whole-network extractions timed")
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--all", action="store_true",
                  help="run the feature computation of all HW-NAS-Bench cells for real")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  if args.cells < 1 or args.reference < 0 or args.workers < 1:
    ap.error("--cells and --workers must be >= 1, --reference >= 0")

  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top

  table = load_nb201_table()
  hw_ops = table.ops[table.has_hw]
  model = em.prior_model(SPEC)
  # 1 first call + --cells timed + one per worker for the start-up; all distinct live cells.
  cells = _distinct_live_sample(hw_ops, 1 + args.cells + args.workers, args.seed)
  timed, startup_cells = cells[1:1 + args.cells], cells[1 + args.cells:]

  # 1. One network, kernels + prediction.
  t = time.perf_counter()
  em.predict_energy_j(model, nk.network_kernels(cells[0]))
  first_s = time.perf_counter() - t
  times, cpu = [], []
  for ops in timed:
    t, c = time.perf_counter(), time.process_time()
    em.predict_energy_j(model, nk.network_kernels(ops))
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  med, cpu_med = statistics.median(times), statistics.median(cpu)
  print(f"first call (fragments + 1 network): {first_s * 1e3:8.1f} ms")
  print(f"composed, median of {len(times)} cells:   {med * 1e3:8.1f} ms wall (p90 "
        f"{np.percentile(times, 90) * 1e3:.1f} ms), {cpu_med * 1e3:.1f} ms CPU  (target <= 10 ms)")
  if args.reference:
    ref = [_whole_network_s(ops, model) for ops in timed[:args.reference]]
    ref_med = statistics.median(ref)
    print(f"whole network, median of {len(ref)}:      {ref_med * 1e3:8.1f} ms wall  "
          f"(composed is {ref_med / med:.1f}x faster)")

  # 2. All cells. Per-cell CPU cost of what a worker computes: a features row of a new live cell.
  nk._kernels_cached.cache_clear()  # pylint: disable=protected-access
  row_cpu = []
  for ops in timed:
    c = time.process_time()
    nk.network_features(ops, SPEC)
    row_cpu.append(time.process_time() - c)
  row_cpu_mean, row_cpu_med = statistics.fmean(row_cpu), statistics.median(row_cpu)
  n = len(hw_ops)
  distinct = len({nk.live_ops(tuple(int(o) for o in r)) for r in hw_ops})
  startup_s = startup_cpu_s = 0.0  # one worker runs in this process: nothing to start
  if args.workers > 1:
    w = len(startup_cells)  # one cell per worker, each in its own process
    c0 = _children_cpu_s()
    t = time.perf_counter()
    nk.compute_features(np.array(startup_cells), SPEC, workers=w, chunk_size=1)
    startup_s = time.perf_counter() - t
    startup_cpu_s = (_children_cpu_s() - c0) / w
  projected_s = startup_s + distinct * row_cpu_mean / args.workers
  print(f"features row of one new cell: mean {row_cpu_mean * 1e3:.1f} ms CPU (median "
        f"{row_cpu_med * 1e3:.1f} ms) over {len(row_cpu)} cells; worker start-up (spawn, imports, "
        f"fragments, 1 cell): {startup_s:.1f} s wall, {startup_cpu_s:.1f} s CPU per worker")
  print(f"all {n} cells ({distinct} distinct live cells), {args.workers} workers: PROJECTED "
        f"{projected_s:.0f} s = {startup_s:.1f} s start-up + {distinct} x "
        f"{row_cpu_mean * 1e3:.1f} ms / {args.workers} (assumes {args.workers} free cores; target "
        "<= 600 s; --all measures it)")
  if args.all:
    if args.workers == 1:
      nk._kernels_cached.cache_clear()  # pylint: disable=protected-access
    c0, p0 = _children_cpu_s(), time.process_time()
    t = time.perf_counter()
    nk.compute_features(hw_ops, SPEC, workers=args.workers)
    all_s = time.perf_counter() - t
    all_cpu_s = (_children_cpu_s() - c0) if args.workers > 1 else time.process_time() - p0
    print(f"all {n} cells ({distinct} distinct live cells), {args.workers} workers: MEASURED "
          f"{all_s:.0f} s wall, {all_cpu_s:.0f} s CPU in the workers (target <= 600 s wall)")
  print(f"cpu cores visible: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (wall times "
        "on a shared machine include waiting for a core)")


if __name__ == "__main__":
  main()
