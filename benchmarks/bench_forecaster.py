r"""Speed of the carbon-intensity forecaster's training: seconds per epoch on the full training set.

Trains the default forecaster (``ForecasterConfig()``, ``TrainConfig(batch_size=256)``) on
US-CAL-CISO 2021-2022 (CarbonX forecasting-data, life-cycle) for a few epochs and prints the time of
each epoch, the median, and a projection of a full run. With ``--train_regions`` it trains the global
model of the region flagfiles instead (the region plus these regions' 2021-2022 windows). As a
reference measured in the same process, it also times the closed-form linear AR baseline fit on the
region's windows, and prints the ratio.

  python -m benchmarks.bench_forecaster [--epochs=3] [--region=US-CAL-CISO] \
      [--train_regions=DE,US-MIDA-PJM]
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import numpy as np

from cenas_jax.carbon import baselines
from cenas_jax.carbon import windows
from cenas_jax.carbon.model import ForecasterConfig, count_params
from cenas_jax.carbon.training import TrainConfig, train_forecaster
from cenas_jax.data import carbon_traces

_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs to time (the first one includes compilation).")
_REGION = flags.DEFINE_string("region", "US-CAL-CISO", "Region of the training trace.")
_TRAIN_REGIONS = flags.DEFINE_list("train_regions", [], "Other regions trained jointly (global model).")


def main(argv: list[str]) -> None:
  del argv
  regions = [_REGION.value] + [r for r in _TRAIN_REGIONS.value if r != _REGION.value]
  series = {r: carbon_traces.region_trace(r, start="2021-01-01T00:00Z", end="2023-01-01T00:00Z").ci_g_per_kwh
            for r in regions}
  ci = series[_REGION.value]
  config = ForecasterConfig(num_regions=len(regions))
  train_config = TrainConfig(batch_size=256, max_epochs=_EPOCHS.value, patience=_EPOCHS.value + 1)
  rows = []
  t0 = time.perf_counter()
  result = train_forecaster(series, config=config, train_config=train_config, progress=rows.append)
  total_s = time.perf_counter() - t0
  epoch_s = [r["epoch_s"] for r in rows if r["epoch"] > 0]
  steady = epoch_s[1:] or epoch_s
  print(f"forecaster ({', '.join(regions)}): {count_params(result.params)} params, "
        f"{result.num_train_windows} training windows, batch {train_config.batch_size}")
  for r in rows:
    if r["epoch"] > 0:
      print(f"  epoch {r['epoch']}: {r['epoch_s']:.2f} s (val MAPE {100 * r['val_mape']:.2f}%)")
  median_s = float(np.median(steady))
  print(f"time per epoch (median, after the first): {median_s:.2f} s; whole call {total_s:.1f} s")
  print(f"projected 30-epoch run: {30 * median_s / 60:.1f} min (budget 10 min on 2 CPU cores)")

  # Reference in the same process: the linear AR baseline's closed-form fit on the same windows.
  norm = result.normalization
  z = norm.transform(ci.to_numpy())
  n = len(ci)
  val_pos = int(round(n * 0.9))
  origins = np.arange(config.history_hours, val_pos - config.horizon_hours + 1)
  hours = windows.hours_since_epoch(ci.index)
  t1 = time.perf_counter()
  hist, fut = windows.make_windows(z, origins, config.history_hours, config.horizon_hours)
  baselines.fit_linear_ar(baselines.linear_ar_features(hist, hours[origins]), fut, l2=1.0)
  ref_s = time.perf_counter() - t1
  print(f"reference (linear AR closed-form fit, same windows): {ref_s:.2f} s; "
        f"epoch / reference = {median_s / ref_s:.1f}x")


if __name__ == "__main__":
  app.run(main)
