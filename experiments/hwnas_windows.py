r"""The deployed CE-NAS agent on trace windows it was not trained on, against the heuristic.

  python -m experiments.hwnas_windows --flagfile=experiments/flags/hwnas_windows.flags --workdir=W

Pre-trains the agent once (windows before --pretrain_end), then runs --strategies for every seed on
--windows_per_region evenly spaced windows of each --windows_regions trace between --windows_start
and --windows_end, and of each --windows_trace_paths file (another grid's trace). Writes
W/summary.json, W/summary.md and W/windows.csv; each finished episode is stored under W/windows/,
so the same command resumes a killed run.
"""

from __future__ import annotations

from absl import app, flags

from cenas_jax.cluster import windows
from experiments import cli
from experiments.hwnas_help import HELP

_HELP = {k: v for k, v in HELP.items() if k not in ("oracle_quantiles", "oracle_splits",
                                                      "oracle_accounting", "workers")}
_HELP.update({
    "windows_per_region": "Windows per region (and per extra trace file).",
    "windows_regions": "Regions of the shared traces to draw windows from.",
    "windows_start": "Windows lie after this UTC time (ISO 8601 with offset).",
    "windows_end": "... and end before this one.",
    "windows_trace_paths": "Extra trace files (e.g. another grid), windows after --pretrain_end.",
    "region": "Ignored: each window sets its own.",
    "start": "Ignored: each window sets its own.",
    "trace_path": "Ignored: use --windows_trace_paths.",
})
cli.define_flags(windows.WindowsConfig, help=_HELP, skip=("seeds",))
flags.DEFINE_integer("num_seeds", 3, "Seeds 0..N-1 per window (ignored when --seeds is set).")
cli.define_tuple("seeds", int, (), "Explicit seeds (integers).")
FLAGS = flags.FLAGS


def main(argv):
  seeds = FLAGS.seeds or tuple(range(FLAGS.num_seeds))
  summary = cli.run_main(argv, windows.WindowsConfig, windows.run, seeds=seeds)
  for acc, ow in summary["over_windows"].items():
    print(f"{acc}: median heuristic / cenas carbon to 0.98 = {ow['median_heuristic_over_cenas']}; "
          f"cenas spends less in {ow['cenas_wins']} of {ow['windows']} windows")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
