r"""Trains and evaluates the carbon-intensity forecaster on one region.

  python -m experiments.train_forecaster --flagfile=experiments/flags/forecaster_US-CAL-CISO.flags \
      --workdir=/tmp/forecaster/US-CAL-CISO

Writes metrics.json, forecaster/, train_log.jsonl and the test-week plot and CSV into --workdir; see
``cenas_jax.carbon.evaluate`` (``run``) for what each holds and for --train_regions, --restore_from
and --refit_every_hours.
"""

from __future__ import annotations

from absl import app

from cenas_jax.carbon import evaluate
from experiments import cli

cli.define_flags(evaluate.ForecastRunConfig, help={
    "region": "Grid region; picks the default trace files.",
    "column": "Carbon-intensity column of Electricity Maps files.",
    "train_trace": "Training trace file (default: the region's CarbonX forecasting-data file).",
    "test_trace": "Test trace file (default: the region's file).",
    "train_start": "First training hour (UTC).",
    "train_end": "End of training (UTC, exclusive).",
    "test_start": "First forecast origin of the test (UTC); history before it is read.",
    "test_end": "End of the test (UTC, exclusive).",
    "restore_from": "Evaluate this saved forecaster folder instead of training.",
    "use_generation": "Feed the generation-by-source columns (CarbonX benchmark files only) to the model "
                      "and to the linear baseline.",
    "train_regions": "Other regions whose forecasting-data files (same --train_start/--train_end) are added "
                     "to the training windows of one global model (empty: train on --region only).",
    "eval_step_hours": "Hours between rolling test origins.",
    "refit_every_hours": "Refit the model's closed-form parts (linear path, P10/P90 calibration; the network "
                         "frozen) and the linear AR baseline every this many hours of test time, on all data "
                         "before the refit time (0: never refit, the models stay as trained).",
    "refit_target": "What the refitted linear path fits: what the frozen network leaves unexplained "
                    "(residual) or the targets on its own, as at training (target).",
    "plot_week_start": "Start (UTC) of the plotted test week (default: the first test origin).",
    "history_hours": "History window (h).",
    "patch_hours": "Hours per token.",
    "d_model": "Token width.",
    "num_layers": "Transformer blocks.",
    "num_heads": "Attention heads.",
    "mlp_dim": "MLP width.",
    "dropout": "Dropout rate.",
    "residual_base": "Seasonal reference the median forecast is a residual over.",
    "linear_skip_input": "History the model's linear path reads: after the per-window normalization "
                         "(window) or as normalized for the whole series (series: the plain ridge; the "
                         "network stays level-blind).",
    "instance_norm": "Standardize each history window by its own mean and standard deviation inside the model.",
    "batch_size": "Windows per step.",
    "learning_rate": "Peak learning rate.",
    "weight_decay": "AdamW weight decay.",
    "max_epochs": "Maximum epochs.",
    "patience": "Early-stopping patience (epochs).",
    "val_fraction": "Fraction at the end of training for validation.",
    "train_stride_hours": "Hours between training origins.",
    "max_train_minutes": "Training wall-clock budget (min).",
    "warmup_steps": "Linear learning-rate warmup (steps).",
    "calibrate_quantiles": "Recalibrate P10/P90 per horizon hour on the validation slice (saved with the "
                           "forecaster).",
    "seed": "Random seed.",
})


def main(argv: list[str]) -> None:
  cli.run_main(argv, evaluate.ForecastRunConfig, evaluate.run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
