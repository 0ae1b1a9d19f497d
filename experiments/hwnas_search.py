r"""CE-NAS on HW-NAS-Bench: allocation strategies x seeds on the simulated GPU pool.

  python -m experiments.hwnas_search --flagfile=experiments/flags/hwnas_quick.flags --workdir=W

Writes W/summary.json, W/results.jsonl (one line per strategy, seed and hour), W/pareto.csv and the
plots (hv_vs_hours.png, hv_vs_carbon.png, allocation_<strategy>.png). Checkpoints every simulated
hour under W/checkpoints/; run the same command again to resume a killed run.
"""

from __future__ import annotations

import dataclasses

from absl import app, flags, logging

from cenas_jax.cluster import experiment

_D = experiment.ExperimentConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory (resumes a run found there).", required=True)
flags.DEFINE_list("strategies", list(_D.strategies), f"Strategies, from {list(experiment.STRATEGIES)}.")
flags.DEFINE_integer("num_seeds", len(_D.seeds), "Seeds 0..N-1 (ignored when --seeds is set).")
flags.DEFINE_list("seeds", [], "Explicit seeds (integers).")
flags.DEFINE_string("region", _D.region, "Carbon-intensity region (US-CAL-CISO, DE, US-MIDA-PJM).")
flags.DEFINE_enum("trace_dataset", _D.trace_dataset, ["forecasting", "benchmark", "electricitymaps"],
                  "Which shared trace files to read for --region.")
flags.DEFINE_enum("ci_column", _D.ci_column, ["lifecycle", "direct"], "Intensity column.")
flags.DEFINE_string("trace_path", _D.trace_path, "Any trace file the data layer reads (overrides --region).")
flags.DEFINE_string("start", _D.start, "UTC start of the search window (ISO 8601 with offset).")
flags.DEFINE_integer("hours", _D.hours, "Simulated hours.")
flags.DEFINE_integer("n_gpus", _D.n_gpus, "GPUs in the pool.")
flags.DEFINE_integer("queue_capacity", _D.queue_capacity, "Evaluation queue capacity.")
flags.DEFINE_float("sample_time_s", _D.sample_time_s, "GPU seconds to score one proposal (supernet).")
flags.DEFINE_float("train_power_w", _D.train_power_w, "Power of a training GPU (W).")
flags.DEFINE_float("sample_power_w", _D.sample_power_w, "Power of a sampling GPU (W).")
flags.DEFINE_float("idle_power_w", _D.idle_power_w, "Power of a held, idle GPU (W).")
flags.DEFINE_float("pue", _D.pue, "Power usage effectiveness.")
flags.DEFINE_float("switch_overhead_s", _D.switch_overhead_s, "Budget lost when a GPU changes role (s).")
flags.DEFINE_integer("screen_per_gpu_hour", _D.screen_per_gpu_hour,
                     "0: official queue refill; N: each sampling GPU screens up to N proposals/hour.")
flags.DEFINE_integer("oneshot_per_gpu_hour", _D.oneshot_per_gpu_hour,
                     "Proposals a GPU scores per hour in one-shot-only search.")
flags.DEFINE_enum("sampling", _D.sampling, ["oneshot", "fewshot"], "Supernet table for sampling scores.")
flags.DEFINE_enum("train_time_model", _D.train_time_model, ["flops_affine", "constant"],
                  "NB201 training-time model (1.1-1.9 GPU-h).")
flags.DEFINE_enum("proposal", _D.proposal, ["rejection", "ehvi"], "LaMOO proposal method.")
flags.DEFINE_float("cp", _D.cp, "LaMOO UCB exploration constant.")
flags.DEFINE_enum("lamoo_preset", _D.lamoo_preset, ["cenas", "lamoo"], "LaMOO tree rules.")
flags.DEFINE_integer("max_tree_samples", _D.max_tree_samples, "Cap on samples per LaMOO tree (0: none).")
flags.DEFINE_integer("n_init", _D.n_init, "Initial random evaluations (uncharged).")
flags.DEFINE_enum("agent_mode", _D.agent_mode, ["faithful", "fixed"], "Agent of the 'cenas' strategy.")
flags.DEFINE_enum("agent_ci_input", _D.agent_ci_input, ["actual", "perfect", "forecast"],
                  "Agent state: current intensity only (official), or next-24 h features from the "
                  "true future (perfect) or the trained forecaster (forecast).")
flags.DEFINE_string("forecaster_dir", _D.forecaster_dir,
                    "Trained forecaster (W/forecaster of experiments.train_forecaster) for --agent_ci_input=forecast.")
flags.DEFINE_float("agent_entropy_weight", _D.agent_entropy_weight,
                   "Entropy bonus of the fixed-mode agent (0.5 as the official agent).")
flags.DEFINE_bool("agent_greedy", _D.agent_greedy,
                  "A pre-trained (frozen) agent takes its most probable action instead of sampling.")
flags.DEFINE_float("agent_beta_scale", _D.agent_beta_scale,
                   "Carbon weight in the fixed-mode agent's reward, beta = beta_scale / CI_max (official 2).")
flags.DEFINE_bool("agent_release", _D.agent_release, "Fixed agent may release GPUs (0..8 training).")
flags.DEFINE_enum("reward_accounting", _D.reward_accounting, ["paper", "full"], "Carbon in the reward.")
flags.DEFINE_integer("pretrain_episodes", _D.pretrain_episodes,
                     "Train the 'cenas' agent over this many simulated episodes first, then deploy it frozen.")
flags.DEFINE_list("pretrain_regions", list(_D.pretrain_regions), "Regions for pre-training windows.")
flags.DEFINE_string("pretrain_end", _D.pretrain_end, "Pre-training windows end before this UTC time.")
flags.DEFINE_list("oracle_quantiles", [str(q) for q in _D.oracle_quantiles],
                  "Intensity quantiles of the oracle's threshold schedules.")
flags.DEFINE_list("oracle_splits", list(_D.oracle_splits),
                  "Oracle schedules' n_train in clean:dirty hours (one GPU samples, the rest released).")
flags.DEFINE_enum("oracle_accounting", _D.oracle_accounting, ["paper", "full"], "What the oracle minimizes.")
flags.DEFINE_list("hv_targets", [str(t) for t in _D.hv_targets], "HV fractions for carbon-to-target.")
flags.DEFINE_integer("workers", _D.workers, "Episodes run in parallel processes.")


def config_from_flags() -> experiment.ExperimentConfig:
  seeds = tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else tuple(range(FLAGS.num_seeds))
  fields = {f.name for f in dataclasses.fields(experiment.ExperimentConfig)}
  kw = {name: FLAGS[name].value for name in fields if name in FLAGS and name != "seeds"}
  kw.update(seeds=seeds, strategies=tuple(FLAGS.strategies),
            pretrain_regions=tuple(FLAGS.pretrain_regions),
            oracle_quantiles=tuple(float(q) for q in FLAGS.oracle_quantiles),
            oracle_splits=tuple(FLAGS.oracle_splits),
            hv_targets=tuple(float(t) for t in FLAGS.hv_targets))
  return experiment.ExperimentConfig(**kw)


def main(argv):
  del argv
  # The binary prints its own progress; orbax logs several INFO lines per hourly checkpoint.
  logging.set_verbosity(logging.WARNING)
  summary = experiment.run_experiment(config_from_flags(), FLAGS.workdir)
  print("\nMedians over seeds (min-max); ratios are vanilla's carbon / the strategy's:")
  print(experiment.summary_table(summary))
  print(f"wrote {FLAGS.workdir}/summary.json and summary.md")


if __name__ == "__main__":
  app.run(main)
