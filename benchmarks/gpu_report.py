r"""Measured whole networks (``gpu_networks.py``) next to the kernel energy model's predictions.

  python benchmarks/gpu_report.py --run workspace/gpu_h200 [--extra_hlo PATH.txt ...]

Reads ``networks.jsonl`` and the compiled HLO (``nb201_hlo.tar.gz`` or ``hlo/``) of one run, and
for every measured network prints and writes (``report.json``):

- the measured time and energy per call (NVML, gross: idle power included);
- the prediction of the device's analytical prior (``--spec``) on two kernel lists: the ``gpu``-mode
  emulation of XLA's GPU fusion (what the library prices everywhere, lowered on any host) and the
  kernels XLA really compiled on the GPU (its optimized HLO, read in ``compiled`` mode);
- the kernel counts of both lists per class, which says where the emulation departs from XLA;
- leave-one-out recalibration on the measured networks themselves (``energy.transfer``'s
  ``scalar`` fit ``a + b * predicted``, against ``flops_linear`` ``a + b * FLOPs``): what a few
  measurements of a new device buy, on these few networks.

``--extra_hlo`` adds compiled programs that were not measured (e.g. a training step whose
measurement did not finish): their kernel counts and predicted time and energy per call.
Runs on a CPU; no GPU is needed.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import tarfile
from pathlib import Path

import numpy as np

from cenas_jax import energy
from cenas_jax.energy import nb201_kernels as nk
from cenas_jax.energy import transfer


def _hlo_texts(run: Path) -> dict[str, str]:
  texts = {}
  if (run / "nb201_hlo.tar.gz").exists():
    with tarfile.open(run / "nb201_hlo.tar.gz") as tf:
      for m in tf.getmembers():
        if m.isfile() and m.name.endswith(".txt"):
          texts[Path(m.name).stem] = tf.extractfile(m).read().decode()
  for p in (run / "hlo").glob("*.txt"):
    texts[p.stem] = p.read_text()
  return texts


def _classes(kernels) -> dict[str, int]:
  return dict(sorted(collections.Counter(k.kernel_class for k in kernels).items()))


def _predict(prior, kernels, batch: int) -> dict[str, float]:
  return {"time_s": float(energy.predict_time_s(prior, kernels, batch_size=batch)),
          "energy_j": float(energy.predict_energy_j(prior, kernels, batch_size=batch))}


def _loo_rmspe(name: str, predicted: np.ndarray, flops: np.ndarray, y: np.ndarray) -> float:
  """RMSPE of ``transfer.fit_candidate(name)`` fitted on all networks but one, on that one."""
  errs = []
  for i in range(len(y)):
    keep = np.arange(len(y)) != i
    m = transfer.fit_candidate(name, predicted[keep, None], flops[keep], y[keep])
    errs.append((m.predict(predicted[i:i + 1, None], flops[i:i + 1])[0] - y[i]) / y[i])
  return float(np.sqrt(np.mean(np.square(errs))))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="folder with networks.jsonl and the HLO")
  parser.add_argument("--spec", default="h200-sxm", help="DEVICE_SPECS name of the prior")
  parser.add_argument("--extra_hlo", nargs="*", default=[], help="compiled HLO of unmeasured programs")
  args = parser.parse_args()
  run = Path(args.run)
  rows = [json.loads(line) for line in (run / "networks.jsonl").read_text().splitlines() if line]
  texts = _hlo_texts(run)
  prior = energy.prior_model(args.spec)
  report = {"spec": args.spec, "prior": prior.provenance, "networks": [], "unmeasured": []}
  print(f"{'network':22s} {'measured ms':>11s} {'J':>7s} | {'gpu-mode k':>10s} {'ms':>7s} {'J':>7s} "
        f"| {'compiled k':>10s} {'ms':>7s} {'J':>7s}")
  for r in rows:
    if r.get("part") != "nb201" or r["name"] not in texts:
      continue
    b = r["batch"]
    emulated = nk.network_kernels(r["ops"], nk.NB201NetConfig(batch_size=b))
    compiled = energy.kernel_graph_from_hlo(texts[r["name"]], mode="compiled", lowered_for="cuda").kernels
    out = {"name": r["name"], "arch_str": r["arch_str"], "ops": r["ops"], "batch": b,
           "measured": {"time_s": r["time_per_call_s"], "energy_j": r["energy_per_call_j"],
                        "power_w": r["power_w"], "counter_updates": r["min_counter_updates"],
                        "window_s": r["window_s"]},
           "gpu_mode": {"n_kernels": len(emulated), "classes": _classes(emulated),
                        **_predict(prior, emulated, b)},
           "compiled": {"n_kernels": len(compiled), "classes": _classes(compiled),
                        **_predict(prior, compiled, b)}}
    report["networks"].append(out)
    m, g, c = out["measured"], out["gpu_mode"], out["compiled"]
    print(f"{r['name']:22s} {m['time_s'] * 1e3:11.3f} {m['energy_j']:7.4f} | {g['n_kernels']:10d} "
          f"{g['time_s'] * 1e3:7.3f} {g['energy_j']:7.4f} | {c['n_kernels']:10d} {c['time_s'] * 1e3:7.3f} "
          f"{c['energy_j']:7.4f}")
  nets = report["networks"]
  if nets:
    summary = {}
    for key in ("gpu_mode", "compiled"):
      summary[key] = {
          "median_measured_over_predicted_time": statistics.median(
              n["measured"]["time_s"] / n[key]["time_s"] for n in nets),
          "median_measured_over_predicted_energy": statistics.median(
              n["measured"]["energy_j"] / n[key]["energy_j"] for n in nets),
          "median_compiled_over_emulated_kernels": statistics.median(
              n["compiled"]["n_kernels"] / n["gpu_mode"]["n_kernels"] for n in nets)}
    summary["median_measured_time_per_compiled_kernel_s"] = statistics.median(
        n["measured"]["time_s"] / n["compiled"]["n_kernels"] for n in nets)
    flops = np.array([float(nk.total_flops(nk.network_kernels(
        n["ops"], nk.NB201NetConfig(batch_size=n["batch"])))) for n in nets])
    loo = {}
    for target in ("energy_j", "time_s"):
      y = np.array([n["measured"][target] for n in nets])
      loo[target] = {"flops_linear": _loo_rmspe("flops_linear", np.zeros(len(y)), flops, y)}
      for key in ("gpu_mode", "compiled"):
        loo[target][f"scalar_on_{key}"] = _loo_rmspe(
            "scalar", np.array([n[key][target] for n in nets]), flops, y)
    summary["leave_one_out_rmspe"] = loo
    report["summary"] = summary
    print(json.dumps(summary, indent=1))
  for path in args.extra_hlo:
    text = Path(path).read_text()
    kernels = energy.kernel_graph_from_hlo(text, mode="compiled", lowered_for="cuda").kernels
    # gpu_networks.py names each program with its batch size (``...-b<batch>-...``).
    m = re.search(r"-b(\d+)(?:-|$)", Path(path).stem)
    batch = int(m.group(1)) if m else 1
    item = {"name": Path(path).stem, "batch_size_for_prediction": batch, "n_kernels": len(kernels),
            "classes": _classes(kernels), **_predict(prior, kernels, batch)}
    report["unmeasured"].append(item)
    print(json.dumps(item))
  (run / "report.json").write_text(json.dumps(report, indent=1) + "\n")
  print(f"wrote {run / 'report.json'}")


if __name__ == "__main__":
  main()
