"""Speed of the NB201 kernel-model fit with its cross-validated choices, against a reference commit.

Run: ``python benchmarks/bench_energy_fit.py --features W/features.npz [--limit 0] [--ref REV]``

Times ``validate.evaluate_target`` (split, class ridge by CV, edge kernels and kernel table by CV,
the CV model selection against the proxies and their blend, the ablation) on one HW-NAS-Bench
target (``--target``, default Jetson TX2 energy; ``--limit`` cells, 0: all 12,554) from cached
kernel counts (``experiments.energy_model_nb201``'s ``features.npz``), and, in the same process,
the ``evaluate_target`` of ``--ref`` (``cenas_jax/energy/validate.py`` at that git revision,
loaded from ``git show``, with its own defaults, and the model's memoization switched off as it was
there) on the same counts. Prints wall and CPU seconds of
both and their ratio. Target: <= 5 min for all 12,554 cells on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load_ref(rev: str) -> types.ModuleType:
  src = subprocess.run(["git", "show", f"{rev}:cenas_jax/energy/validate.py"], cwd=ROOT,
                       check=True, capture_output=True, text=True).stdout
  mod = types.ModuleType("_validate_ref")
  mod.__file__ = f"<{rev}:cenas_jax/energy/validate.py>"
  sys.modules[mod.__name__] = mod  # dataclasses look their module up
  exec(compile(src, mod.__file__, "exec"), mod.__dict__)  # pylint: disable=exec-used
  return mod


class _Uncached:
  """Switches off the model's memoized signature keys and per-kernel features, which the
  reference revision did not have, so the reference pays what it paid (same results)."""

  def __enter__(self):
    from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

    self.saved = (em._signature_key_cached, em._vocab_keys, em._per_kernel_features)  # pylint: disable=protected-access
    raw = em._signature_key_cached.__wrapped__  # pylint: disable=protected-access
    em._signature_key_cached = raw  # pylint: disable=protected-access
    em._vocab_keys = lambda kernels, level: tuple(raw(k, level) for k in kernels)  # pylint: disable=protected-access
    em._per_kernel_features = lambda kernels, spec: (  # pylint: disable=protected-access
        np.stack([em.kernel_features([k], spec) for k in kernels]) if kernels else
        np.zeros((0, len(em.FEATURE_NAMES))))
    return self

  def __exit__(self, *exc):
    from cenas_jax.energy import model as em  # pylint: disable=g-import-not-at-top

    em._signature_key_cached, em._vocab_keys, em._per_kernel_features = self.saved  # pylint: disable=protected-access


def _timed(fn):
  t, c = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--features", required=True, help="features.npz of energy_model_nb201")
  ap.add_argument("--target", default="edgegpu_energy")
  ap.add_argument("--limit", type=int, default=0, help="first N cells (0: all)")
  ap.add_argument("--ref", default="06a51f6", help="git revision of the reference validate.py")
  args = ap.parse_args()

  from cenas_jax.data.nasbench import load_nb201_table  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import validate  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.specs import get_spec  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy.validate_targets import table_targets  # pylint: disable=g-import-not-at-top

  table = load_nb201_table()
  target = table_targets(table, (args.target,))[0]
  if args.limit:
    target = type(target)(target.name, target.kind, target.arch_index[:args.limit],
                          target.value_si[:args.limit], target.unit, target.source)
  spec, net = get_spec("jetson-tx2"), nk.NB201NetConfig()
  cached = nk.load_feature_cache(args.features, nk.cache_key(spec.name, net))
  if cached is None:
    ap.error(f"{args.features} has no kernel counts for this code; run energy_model_nb201 first")
  idx, counts = cached
  row_of = {int(i): r for r, i in enumerate(idx)}
  xla = counts.rows(np.array([row_of[int(i)] for i in target.arch_index]))
  ops = table.ops[target.arch_index]
  ref = _load_ref(args.ref)
  res, wall, cpu = _timed(lambda: validate.evaluate_target(validate.ValidateConfig(), target, ops,
                                                           xla, spec, net))
  with _Uncached():
    ref_res, ref_wall, ref_cpu = _timed(lambda: ref.evaluate_target(ref.ValidateConfig(), target,
                                                                    ops, xla, spec, net))
  n = len(target.value_si)
  print(f"{args.target}, {n} cells ({res['split']['n_train']} training), load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"reference {args.ref}: {ref_wall:7.1f} s wall, {ref_cpu:7.1f} s CPU  (kernel model RMSPE "
        f"{ref_res['metrics']['kernel_model']['rmspe']:.4f})")
  print(f"this code:         {wall:7.1f} s wall, {cpu:7.1f} s CPU  (selected "
        f"{res['fitted']['selected']}, RMSPE {res['metrics']['selected']['rmspe']:.4f}; "
        f"{len(validate.edge_variants(validate.ValidateConfig()))} edge variants, "
        f"{len(validate.ValidateConfig().table_candidates)} tables, 5 candidates)")
  print(f"ratio this/reference: {wall / ref_wall:.2f} wall, {cpu / ref_cpu:.2f} CPU  "
        f"(target: <= 300 s for 12,554 cells on 2 cores)")


if __name__ == "__main__":
  main()
