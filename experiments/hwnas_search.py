r"""CE-NAS on HW-NAS-Bench: allocation strategies x seeds on the simulated GPU pool.

  python -m experiments.hwnas_search --flagfile=experiments/flags/hwnas_quick.flags --workdir=W

Writes W/summary.json, W/summary.md, W/results.jsonl (one line per strategy, seed and hour),
W/pareto.csv and the plots (hv_vs_hours.png, hv_vs_carbon.png, allocation_<strategy>.png).
Checkpoints every simulated hour under W/checkpoints/; run the same command again to resume a
killed run.
"""

from __future__ import annotations

from absl import app, flags

from cenas_jax.cluster import experiment
from cenas_jax.cluster import summary as summary_lib
from experiments import cli
from experiments.hwnas_help import HELP as _HELP

cli.define_flags(experiment.ExperimentConfig, help=_HELP, skip=("seeds",))
flags.DEFINE_integer("num_seeds", len(experiment.ExperimentConfig().seeds),
                     "Seeds 0..N-1 (ignored when --seeds is set).")
cli.define_tuple("seeds", int, (), "Explicit seeds (integers); more seeds added to a finished "
                 "study run only the new ones.")
FLAGS = flags.FLAGS


def main(argv):
  seeds = FLAGS.seeds or tuple(range(FLAGS.num_seeds))
  summary = cli.run_main(argv, experiment.ExperimentConfig, experiment.run, seeds=seeds)
  print("\nMedians over seeds (min-max); ratios are vanilla's carbon / the strategy's:")
  print(summary_lib.summary_table(summary))
  print(f"summary in {FLAGS.workdir}/summary.json and summary.md (which explains every column)")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
