"""The benchmark that sets a new run's strategies beside a reference run's, seed by seed."""

from __future__ import annotations

import pytest

from benchmarks.compare_hwnas_rows import compare


def _summary(seeds, rows):
  """A summary with ``rows[name] = (final_hv_frac, to_0.98 paper, to_0.98 full)`` per seed."""
  return {"seeds": seeds, "strategies": {
      name: {"final_hv_frac": hv, "n_trained": [10] * len(seeds),
             "carbon_to_target_g": {"paper": {"0.98": paper}, "full": {"0.98": full}}}
      for name, (hv, paper, full) in rows.items()}}


def test_ratios_are_per_seed_medians_and_skip_seeds_that_never_reach_the_target():
  ref = _summary([0, 1, 2], {"vanilla": ([1, 1, 1], [400, 800, 900], [400, 800, 900]),
                             "heuristic": ([1, 1, 1], [200, 100, 300], [200, 100, 300]),
                             "oracle": ([1, 1, 1], [50, 50, 50], [50, 50, 50])})
  new = _summary([0, 1], {"agent": ([0.99, 0.97], [100, None], [400, 200])})
  (line,) = compare(new, ref)
  assert "agent: final HV 0.9800" in line
  paper, full = line.split("; ")[1:]
  # Seed 1 never reaches 0.98 under paper accounting: one ratio, from seed 0.
  assert "vanilla/agent 4.00" in paper and "heuristic/agent 2.00 (1 of 2 seeds less)" in paper
  assert "agent/oracle 2.00" in paper
  # Full: vanilla/agent is the median of 400/400 and 800/200.
  assert "vanilla/agent 2.50" in full and "agent/oracle 6.00" in full


def test_seeds_missing_from_the_reference_are_refused():
  ref = _summary([0], {"vanilla": ([1], [1], [1])})
  with pytest.raises(ValueError, match=r"no seeds \[1\]"):
    compare(_summary([0, 1], {"agent": ([1, 1], [1, 1], [1, 1])}), ref)
