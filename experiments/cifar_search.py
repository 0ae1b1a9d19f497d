r"""CE-NAS on CIFAR-10: the allocation agent splits GPUs between supernet sampling and training.

  python -m experiments.cifar_search --flagfile=experiments/flags/quickstart.flags --workdir=W

Writes W/summary.json, W/summary.md, W/results.jsonl (one line per trace hour), W/pareto.csv, the
figures (pareto.png, hv_vs_hours.png, hv_vs_carbon.png, allocation.png) and W/architectures/ (each
Pareto architecture's genotype and trained parameters; ``cenas_jax.training.export.load_network``
loads one). Checkpoints every hour; run the same command again to resume a killed run.

On many hosts, every host runs the same command with ``--coordinator_address=HOST0:PORT
--num_processes=N --process_id=I`` and a --workdir on storage they all see: the supernet trains and
scores data-parallel over every host's devices, process 0 runs the search and writes the outputs
(``cenas_jax.cifar_nas.multihost``).
"""

from __future__ import annotations

from absl import app

from cenas_jax.cifar_nas import config as config_lib
from cenas_jax.cifar_nas import experiment
from experiments import cli
from experiments.hwnas_help import HELP as _HWNAS_HELP

# The agent and its pre-training are the HW-NAS-Bench study's (cluster.config): their flags share its
# help, and the entries below override where the CIFAR-10 search differs.
_HELP = {
    **{k: v for k, v in _HWNAS_HELP.items() if k.startswith(("agent_", "pretrain_", "forecaster_"))},
    "live_zone": "With --clock=wall, read each hour's intensity live from Electricity Maps for this "
                 "zone at the hour's start (token in ELECTRICITYMAPS_TOKEN) instead of a trace.",
    "strategy": "Who splits the GPUs hour by hour (cenas: the allocation agent).",
    "seed": "Seed of proposals, supernet and trainings.",
    "cifar_path": "CIFAR-10 archive or folder; empty: download the official archive (sha256-checked); "
                  "shared:<path>: a file under $CENAS_SHARED_DATA.",
    "train_images": "Training images networks and the supernet train on (0: all but the held-out).",
    "valid_images": "Training images held out for the supernet's scores.",
    "test_images": "Test images a trained network is tested on (0: all).",
    "include_genotypes": "Published cells (DARTS_V1, DARTS_V2, P_DARTS, PC_DARTS) or genotype JSON "
                         "files that are candidates from the start.",
    "region": "Carbon-intensity region (US-CAL-CISO, DE, US-MIDA-PJM).",
    "trace_dataset": "Which shared trace files to read for --region.",
    "ci_column": "Intensity column.",
    "trace_path": "Any trace file the data layer reads (overrides --region).",
    "start": "UTC start of the search window (ISO 8601 with offset).",
    "clock": "replay: one trace hour = --hour_s device-seconds (deterministic); wall: real hours.",
    "hours": "Trace hours the search runs.",
    "hour_s": "Device-seconds per trace hour under --clock=replay.",
    "pace_wall_s": "Under replay, wait at least this many wall seconds per hour.",
    "n_gpus": "GPUs the agent splits between sampling and evaluation.",
    "n_init": "Random architectures trained before the first hour (uncharged).",
    "candidates_per_hour": "Genotypes sampled per hour for LaMOO to classify.",
    "queue_capacity": "Evaluation queue capacity.",
    "screen_per_gpu_hour": "0: official queue refill; N: each sampling GPU screens up to N proposals/hour.",
    "idle_power_w": "Power of a held, idle GPU (W).",
    "pue": "Power usage effectiveness.",
    "switch_overhead_s": "Device-seconds lost when a GPU changes role.",
    "history_hours": "Trailing hours of intensity a strategy sees.",
    "reward_accounting": "Carbon in the agent's reward.",
    "energy_device": "NVIDIA device whose predicted step time and energy price the search.",
    "backend": "Where training jobs run: local devices, or a Ray cluster.",
    "ray_address": "Address of a running Ray cluster (empty: start one on this machine).",
    "n_devices": "Local devices the supernet (and, with the local backend, the training jobs) use "
                 "(0: all).",
    "devices_per_job": "Devices one training job trains on (data-parallel).",
    "coordinator_address": "Many hosts: process 0's host:port; every host runs the same command "
                           "with its --process_id (the supernet spans every host's devices; "
                           "--workdir must be on storage all hosts see).",
    "num_processes": "Many hosts: the number of processes (0: from the cluster environment).",
    "process_id": "Many hosts: this process's index (-1: from the cluster environment).",
    "objectives": "accuracy,params (the paper's), or accuracy,params,energy: adds the trained "
                  "network's predicted inference energy on --energy_device (mJ per image, minimized).",
    "inference_batch": "Images per inference call the energy objective is priced at (1: one request).",
    "init_channels": "Channels of the trained networks.",
    "layers": "Cells of the trained networks.",
    "epochs": "Training epochs of a proposal.",
    "batch_size": "Training batch size.",
    "learning_rate": "Initial SGD learning rate (cosine schedule).",
    "cutout_length": "Cutout size (0: none).",
    "drop_path_prob": "Drop-path probability at the last epoch.",
    "auxiliary_weight": "Weight of the auxiliary head's loss (0: no head).",
    "compute_dtype": "float32, or bfloat16 (mixed precision: bf16 forward/backward on a GPU's tensor "
                     "cores, float32 master weights and update).",
    "supernet_channels": "Channels of the supernet.",
    "supernet_layers": "Cells of the supernet.",
    "supernet_epochs": "SPOS training epochs of the supernet.",
    "supernet_batch_size": "Supernet batch size.",
    "supernet_learning_rate": "Supernet learning rate.",
    "few_shot": "Split the supernet by the op of one edge into 7 sub-supernets.",
    "calib_batches": "Batches that recalibrate BatchNorm for a scored path.",
    "proposal": "LaMOO proposal method.",
    "cp": "LaMOO UCB exploration constant.",
    "lamoo_preset": "LaMOO tree rules.",
    "max_tree_samples": "Cap on samples per LaMOO tree (0: none).",
    "agent_release": "The repaired agent may release GPUs.",
    "pretrain_episodes": "Pre-train the 'cenas' agent on this many simulated HW-NAS-Bench episodes.",
}
cli.define_flags(config_lib.CifarSearchConfig, help=_HELP)


def main(argv):
  summary = cli.run_main(argv, config_lib.CifarSearchConfig, experiment.run)
  if summary is None:  # a process other than 0 of a many-host search: process 0 reports
    return
  print(f"\ntrained {summary['n_trained']} architectures; Pareto set of {len(summary['pareto'])}; "
        f"carbon {summary['carbon_g']['full']:.4g} g full / {summary['carbon_g']['paper']:.4g} g paper "
        "accounting; summary.md explains every number")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
