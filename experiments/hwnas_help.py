"""Help text of the HW-NAS-Bench study's flags, shared by the binaries that take them
(``experiments.hwnas_search`` and ``experiments.hwnas_windows``)."""

from __future__ import annotations

from cenas_jax.cluster.config import STRATEGIES

HELP = {
    "strategies": f"Strategies, from {list(STRATEGIES)}.",
    "region": "Carbon-intensity region (US-CAL-CISO, DE, US-MIDA-PJM).",
    "trace_dataset": "Which shared trace files to read for --region.",
    "ci_column": "Intensity column.",
    "trace_path": "Any trace file the data layer reads (overrides --region).",
    "start": "UTC start of the search window (ISO 8601 with offset).",
    "hours": "Simulated hours.",
    "n_init": "Initial random evaluations (uncharged).",
    "n_gpus": "GPUs in the pool.",
    "step_s": "Length of one simulated step (s).",
    "queue_capacity": "Evaluation queue capacity.",
    "sample_time_s": "GPU seconds to score one proposal (supernet).",
    "train_power_w": "Power of a training GPU (W).",
    "sample_power_w": "Power of a sampling GPU (W).",
    "idle_power_w": "Power of a held, idle GPU (W).",
    "pue": "Power usage effectiveness.",
    "switch_overhead_s": "Budget lost when a GPU changes role (s).",
    "screen_per_gpu_hour": "0: official queue refill; N: each sampling GPU screens up to N proposals/hour.",
    "screen_explore_every": "With screening, every k-th job started is the optimizer's first proposal "
                            "of an hour, whatever the supernet predicts (0: off).",
    "screen_explore_after": "Exploration (--screen_explore_every) starts once this many jobs have started.",
    "screen_calibration_k": "0: off; k: screening adds to each supernet estimate the mean error of the "
                            "k trained architectures nearest in energy.",
    "history_hours": "Trailing hours of intensity a strategy sees.",
    "oneshot_per_gpu_hour": "Proposals a GPU scores per hour in one-shot-only search.",
    "reward_accounting": "Carbon in the agent's reward.",
    "sampling": "Supernet table for sampling scores.",
    "train_time_model": "NB201 training-time model (1.1-1.9 GPU-h).",
    "proposal": "LaMOO proposal method.",
    "cp": "LaMOO UCB exploration constant.",
    "lamoo_preset": "LaMOO tree rules.",
    "max_tree_samples": "Cap on samples per LaMOO tree (0: none).",
    "agent_mode": "Agent of the 'cenas' strategy: repaired, or faithful (the official agent).",
    "agent_ci_input": "Agent state: current intensity only (official), or next-24 h features from the "
                      "true future (perfect) or the trained forecaster (forecast).",
    "forecaster_dir": "Trained forecaster (W/forecaster of experiments.train_forecaster) for "
                      "--agent_ci_input=forecast.",
    "agent_entropy_weight": "Entropy bonus of the repaired agent (0.5 as the official agent).",
    "agent_greedy": "A pre-trained (frozen) agent takes its most probable action instead of sampling.",
    "agent_beta_scale": "Carbon weight in the repaired agent's reward, beta = beta_scale / CI_max "
                        "(official 2).",
    "agent_action": "Action of the repaired agent: absolute (0..n_gpus training GPUs) or residual "
                    "(adjust a rule, --agent_residual_base, by -3..3).",
    "agent_residual_base": "Rule a residual action adjusts: intensity (the heuristic's: 1..n-1 "
                           "training GPUs falling linearly with the scaled intensity) or quantile "
                           "(online_threshold's: 4 GPUs at or below the median of the last and "
                           "next 24 h, else 1).",
    "agent_reward": "Reward of the repaired agent: official, or progress (carbon priced against the "
                    "HV still to gain).",
    "agent_carbon_price": "Progress reward: price of one hour of the whole pool training at the "
                          "trace's highest intensity, in e-folds of the remaining HV gap.",
    "agent_n_step": "Hours of rewards in the repaired agent's critic target before it "
                    "bootstraps (1: TD(0)).",
    "agent_release": "The repaired agent may release GPUs (0..8 training).",
    "pretrain_episodes": "Train the 'cenas' agent over this many simulated episodes first, then "
                         "deploy it frozen.",
    "pretrain_regions": "Regions for pre-training windows.",
    "pretrain_end": "Pre-training windows end before this UTC time.",
    "pretrain_optimizer": "Proposals in pre-training episodes: random (fast) or lamoo (the search's "
                          "own).",
    "pretrain_entropy_final": "Entropy weight at the last pre-training episode (linear from "
                              "--agent_entropy_weight); < 0 keeps it constant.",
    "pretrain_seed": "Seed of pre-training (windows drawn, initial weights); other seeds measure "
                     "how much a result owes to one draw.",
    "pretrain_draws": "Agents to pre-train (seeds --pretrain_seed on); the one that reaches the HV "
                      "target for the least carbon on validation windows of the pre-training "
                      "period is deployed (scores in pretrain_validation.json).",
    "pretrain_validation_episodes": "Validation episodes per pre-trained agent (random windows "
                                    "of the pre-training period, the same for every agent).",
    "oracle_quantiles": "Intensity quantiles of the oracle's threshold schedules.",
    "oracle_splits": "Oracle schedules' n_train in clean:dirty hours, each N_CLEAN:N_DIRTY (one GPU "
                     "samples, the rest released).",
    "oracle_accounting": "What the oracle minimizes.",
    "hv_targets": "HV fractions for carbon-to-target.",
    "carbon_budgets_g": "Carbon budgets (g) for HV at budget.",
    "workers": "Episodes run in parallel processes.",
}
