r"""Energy-aware vs accuracy-only NAS for tabular data on one weight-entangled supernet.

  python -m experiments.tabular_search --flagfile=experiments/flags/tabular_adult.flags --workdir=W

Writes W/summary.json (both winners, energy_saving, accuracy_delta, medians over seeds, hypervolume
per method of its front retrained, the E0-swept front), W/pareto.csv, W/pareto.png and W/seeds/seed_<s>.json; run the same
command again to skip the seeds already finished.
"""

from __future__ import annotations

from absl import app

from cenas_jax.tabular_nas import experiment
from experiments import cli

_HELP = {
    "dataset": "adult, german_credit, california_housing, csv:PATH (with --target) or openml:ID.",
    "target": "Target column of a CSV or OpenML dataset.",
    "task": "Task of a CSV target (auto: text labels are classes, numbers with many values "
            "a regression target).",
    "space": "Search space.",
    "seeds": "Seeds (one search and retraining each).",
    "fold": "TabZilla fold (test fold; the next one validates).",
    "depths": "Depth values (empty: the paper's 1..10).",
    "widths": "MLP width / ResNet d_main / FT-Transformer d_token values (empty: the paper's).",
    "hidden_widths": "ResNet d_hidden values (empty: the paper's).",
    "dropouts": "Dropout values (empty: the paper's).",
    "heads": "FT-Transformer heads per block values (empty: the paper's 3..8; head dim 8).",
    "ffn_ratios": "FT-Transformer FFN ratio values (empty: the paper's 2.0..4.0 step 0.5).",
    "batch_size": "Training batch (supernet and retraining).",
    "lr": "AdamW learning rate (supernet and retraining).",
    "spos_steps": "Uniform (SPOS) supernet steps before the searches.",
    "search_steps": "Steps of every search method (one supernet step + K candidates scored each).",
    "candidates": "Candidates K scored per search step.",
    "val_batch": "Validation rows per candidate score.",
    "score_dropout": "Score candidates with their dropout noise drawn (BatchNorm in inference "
                     "mode), so the search sees the dropout decisions; without it they do not "
                     "change a score and are picked at random (MLP and ResNet spaces).",
    "n_mc": "Monte-Carlo samples of TabNAS's feasible-mass estimate.",
    "reward": "Energy-aware reward.",
    "controller_lr": "Adam learning rate of the policy logits.",
    "controller_baseline": "REINFORCE baseline: ema (moving average of past steps' mean reward) "
                           "or loo (each candidate against the mean of the step's others, "
                           "which share its validation batch).",
    "beta": "TuNAS cost weight (< 0).",
    "e0_quantile": "Energy budget E0 as a quantile of uniform architectures' energies.",
    "e0_sweep": "More E0 quantiles: one energy-aware search each, for the front over E0.",
    "baselines": "Also run the front-finders: random search, and regularized evolution and the "
                 "energy-aware controller over the budget ladder --front_quantiles.",
    "front_quantiles": "Energy budgets (quantiles, as --e0_quantile) of the front-finders' ladder; "
                       "the budgets share --search_steps.",
    "judge_fronts": "Retrain every method's front from scratch and compare their hypervolumes "
                    "(false: only the search-time hypervolume, biased by batch noise).",
    "device": "Device spec of the analytical kernel energy model.",
    "deploy_batch": "Deployment batch size of the energy figures (batch 1 is always reported).",
    "retrain_epochs": "Max epochs of retraining the winners.",
    "patience": "Early stopping patience (epochs) on the validation fold.",
    "retrain_steps_per_epoch": "Cap on steps per retraining epoch (0: a full pass).",
}
cli.define_flags(experiment.TabularSearchConfig, help=_HELP)


def main(argv):
  summary = cli.run_main(argv, experiment.TabularSearchConfig, experiment.run)
  es, ad = summary["energy_saving"], summary["accuracy_delta"]
  print(f"energy_saving (batch {summary['deploy_batch']}): median {es['median']:.3f} "
        f"[{es['min']:.3f}, {es['max']:.3f}]; batch 1: "
        f"{summary['energy_saving_batch1']['median']:.3f}; accuracy_delta median {ad['median']:.3f}")
  hv = summary.get("hypervolume") or summary["hypervolume_search"]
  label = "retrained fronts" if "hypervolume" in summary else "search-time scores"
  print(f"hypervolume ({label}), median: " + ", ".join(
      f"{m} {v['median']:.4f}" for m, v in sorted(hv.items(), key=lambda kv: -kv[1]["median"])))


if __name__ == "__main__":
  app.run(main)
