r"""Whole networks on an NVIDIA GPU: NVML energy and time per call, and the kernels XLA compiled.

  python benchmarks/gpu_networks.py --out DIR [--parts nb201,tabular,darts]
  python benchmarks/gpu_networks.py --out DIR --fake_meter   # checks this script on a CPU
  python benchmarks/gpu_networks.py --out DIR --csv_from DIR/networks.jsonl   # CSV only, no GPU

What is measured (``kernel_bench.measure_calls``: back-to-back calls filling ``--min_window_s``,
``--repeats`` windows, medians):

- ``nb201``: inference of NB201 networks (C=16, N=5, random weights) of ``--nb201_cells`` seeded
  distinct cells plus the all-conv3x3 and all-skip cells, at batch 1 and ``--nb201_batch`` (or at
  each of ``--nb201_batches``), a cell's batches one after the other; then
  ``DIR/nb201_targets.csv`` (``nb201_targets_csv``): one row per cell, ``time_b<B>_ms`` and
  ``energy_b<B>_j`` per batch, what ``experiments.energy_model_nb201
  --target_column=time_b1_ms@1,time_b256_ms@256`` fits one model over;
- ``tabular``: inference of adult's MLP winners and extremes (WORKSPACE section 7) and of seeded
  ResNet and FT-Transformer architectures, at batch 1 and ``--tabular_batch``; the spaces are
  built from the real adult split, as ``tabular_search`` builds them;
- ``darts``: the DARTS-V2 training step (C=36, 20 cells, batch 96, the paper recipe) in float32 and
  bfloat16 (``RecipeConfig.compute_dtype``): images/s, J/step, J/epoch (50,000 images), XLA's FLOP
  count of the compiled step and the model FLOP utilization against the device's dense peak.

Every measurement is one JSON line appended to ``DIR/networks.jsonl`` (a killed run keeps what it
measured), with the idle power, the meter's provenance and the JAX version. The optimized HLO that
XLA compiled for each program is written to ``DIR/hlo/<name>.txt``, so the kernels the GPU really
ran can be read on any machine and priced by the kernel energy model next to the measurement
(``benchmarks/gpu_report.py``). Predictions are not made here: the device's JAX need not be ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cenas_jax.energy import kernel_bench
from cenas_jax.energy.meter import FakeEnergyMeter, NvmlEnergyMeter

# adult, WORKSPACE section 7: the three seeds' winners (energy-aware and accuracy-only) and extremes.
ADULT_MLPS = ((1, 4), (1, 52), (1, 60), (1, 64), (1, 256), (1, 848), (1, 856), (1, 944), (2, 848),
              (4, 512))
DARTS_EPOCH_IMAGES = 50_000


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Recorder:
  """Appends measurements to ``networks.jsonl`` and compiled HLO to ``hlo/``."""

  def __init__(self, out: Path, meter, idle_power_w: float):
    self.out, self.meter, self.idle_power_w = out, meter, idle_power_w
    (out / "hlo").mkdir(parents=True, exist_ok=True)
    self.path = out / "networks.jsonl"

  def compile(self, name: str, jitted, *args):
    """Compiles ``jitted`` for ``args`` once (the executable is what gets measured: calling
    ``jitted`` again would compile a second time) and writes its optimized HLO; returns the
    executable and XLA's cost analysis (flops, bytes)."""
    compiled = jitted.lower(*args).compile()
    (self.out / "hlo" / f"{name}.txt").write_text(compiled.as_text())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    cost = cost or {}
    return compiled, {"xla_flops": float(cost.get("flops", float("nan"))),
                      "xla_bytes_accessed": float(cost.get("bytes accessed", float("nan")))}

  def measure(self, name: str, call, args: argparse.Namespace, **fields) -> dict:
    m = kernel_bench.measure_calls(self.meter, call, name=name, min_window_s=args.min_window_s,
                                   repeats=args.repeats, cooldown_s=args.cooldown_s)
    prov = self.meter.provenance()
    row = {"name": name, **fields, **m, "idle_power_w": self.idle_power_w,
           "dyn_energy_per_call_j": m["energy_per_call_j"] - self.idle_power_w * m["time_per_call_s"],
           "energy_source": prov.energy_source, "device_name": prov.device_name,
           "driver_version": prov.driver_version, "sm_clock_mhz": prov.sm_clock_mhz,
           "power_limit_w": prov.power_limit_w, "temperature_c": prov.temperature_c,
           "jax_version": jax.__version__, "jax_backend": jax.default_backend(),
           "timestamp_utc": _now()}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    print(f"{name}: {m['time_per_call_s'] * 1e3:.4g} ms/call, {m['energy_per_call_j']:.4g} J/call, "
          f"{m['power_w']:.0f} W ({m['min_counter_updates']} updates)", flush=True)
    return row


def _inference(rec: Recorder, args, name: str, module, x: jax.Array, **fields) -> None:
  variables = jax.jit(lambda k: module.init(k, x[:1]))(jax.random.key(0))
  fwd, _ = rec.compile(name, jax.jit(lambda v, x: module.apply(v, x)), variables, x)
  rec.measure(name, lambda: fwd(variables, x), args, batch=int(x.shape[0]), **fields)


def nb201(rec: Recorder, args) -> None:
  from cenas_jax.spaces import nb201, nb201_net  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  cells = [(3,) * 6, (1,) * 6] + [tuple(int(v) for v in rng.integers(0, 5, 6))
                                   for _ in range(args.nb201_cells)]
  batches = ([int(b) for b in args.nb201_batches.split(",")] if args.nb201_batches else
             [1, args.nb201_batch])
  for ops in dict.fromkeys(cells):  # distinct, in order
    arch_str = nb201.ops_to_arch_str(ops)
    net = nb201_net.make_nb201_net(ops)
    for b in batches:
      x = jax.random.normal(jax.random.key(1), (b, 32, 32, 3), jnp.float32)
      module = _EvalMode(net)
      _inference(rec, args, f"nb201-{''.join(map(str, ops))}-b{b}", module, x, part="nb201",
                 ops=list(ops), arch_str=arch_str)


def nb201_targets_csv(jsonl: Path, csv_path: Path) -> int:
  """Writes the NB201 rows of ``jsonl`` (``networks.jsonl``) as one row per cell (``arch_str``)
  with ``time_b<B>_ms`` and ``energy_b<B>_j`` (per call, NVML total, idle included) per batch
  (empty where a batch was not measured); returns the number of cells. A later measurement of the
  same (cell, batch) replaces an earlier one."""
  from cenas_jax import results  # pylint: disable=import-outside-toplevel

  by_cell: dict[str, dict[str, float]] = {}
  batches: set[int] = set()
  with open(jsonl) as f:
    for line in f:
      row = json.loads(line)
      if row.get("part") != "nb201":
        continue
      b = int(row["batch"])
      batches.add(b)
      by_cell.setdefault(row["arch_str"], {}).update(
          {f"time_b{b}_ms": row["time_per_call_s"] * 1e3, f"energy_b{b}_j": row["energy_per_call_j"]})
  columns = ["arch_str"] + [f"{q}_b{b}_{u}" for q, u in (("time", "ms"), ("energy", "j"))
                            for b in sorted(batches)]
  results.write_csv(csv_path, [{"arch_str": a, **v} for a, v in by_cell.items()], columns)
  return len(by_cell)


@dataclasses.dataclass(frozen=True)
class _EvalMode:
  """A network whose ``apply`` runs in inference mode (BatchNorm's running statistics)."""

  net: object

  def init(self, key, x):
    return self.net.init(key, x, train=False)

  def apply(self, variables, x):
    return self.net.apply(variables, x, train=False)


def tabular(rec: Recorder, args) -> None:
  # pylint: disable=import-outside-toplevel
  from cenas_jax.spaces.tabular import make_space
  from cenas_jax.supernets import tabular as sn
  from cenas_jax.tabular_nas import data as data_lib

  split = data_lib.prepare(data_lib.load_dataset("adult"), fold=0)
  spaces = {kind: make_space(kind, split.d_in, split.d_out, cat_cardinalities=split.cat_cardinalities)
            for kind in ("mlp", "resnet", "ftt")}
  mlp = spaces["mlp"]
  archs = []
  for depth, width in ADULT_MLPS:
    a = np.zeros(len(mlp.n_choices), np.int32)
    a[0], a[1] = mlp.depths.index(depth), mlp.widths.index(width)
    archs.append(("mlp", a))
  rng = np.random.default_rng(0)
  for kind in ("resnet", "ftt"):
    archs += [(kind, a) for a in spaces[kind].sample(rng, args.tabular_random)]
  for kind, arch in archs:
    space = spaces[kind]
    desc = space.describe(arch)
    for b in (1, args.tabular_batch):
      x = jax.random.normal(jax.random.key(1), (b, space.d_in), jnp.float32)
      _inference(rec, args, f"tabular-{kind}-{_slug(desc)}-b{b}", sn.standalone(space, arch), x,
                 part="tabular", space=kind, arch=[int(v) for v in arch], describe=desc,
                 dataset="adult", d_in=space.d_in, d_out=space.d_out)


def _slug(text: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:60]


def darts(rec: Recorder, args) -> None:
  # pylint: disable=import-outside-toplevel
  from cenas_jax.energy.specs import DEVICE_SPECS
  from cenas_jax.spaces import darts as space
  from cenas_jax.training import cifar
  from cenas_jax.training import mesh as mesh_lib
  from cenas_jax.training import step as step_lib

  genotype = space.GENOTYPES["DARTS_V2"]
  peaks = DEVICE_SPECS[args.peak_device].peak_flops_per_s
  mesh = mesh_lib.make_data_mesh(1)
  rng = np.random.default_rng(0)
  for dtype in args.darts_dtypes.split(","):
    config = dataclasses.replace(cifar.PAPER_RECIPE, compute_dtype=dtype, init_channels=args.darts_channels,
                                 layers=args.darts_layers)
    per_epoch = -(-DARTS_EPOCH_IMAGES // config.batch_size)
    compiled = cifar._compiled(genotype, config, per_epoch, mesh)  # pylint: disable=protected-access
    state = cifar.init_state(compiled, 0, mesh)
    b = config.batch_size
    batch = {"image": rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8),
             "label": rng.integers(0, 10, b).astype(np.int32),
             "drop_prob": np.full(b, 0.1, np.float32)}
    padded, weights = step_lib.pad_batch(batch, b)
    batch_d, weights_d = mesh_lib.shard_batch((padded, weights), mesh)
    name = f"darts_v2-c{config.init_channels}-l{config.layers}-b{b}-{dtype}-train_step"
    with jax.set_mesh(mesh):
      exe, cost = rec.compile(name, compiled.train_step.jitted, state, batch_d, weights_d)
      holder = [state]

      def call():  # the state is donated: each call consumes the previous one
        holder[0], metrics = exe(holder[0], batch_d, weights_d)
        return metrics["loss"]

      row = rec.measure(name, call, args, part="darts", genotype="DARTS_V2",
                        init_channels=config.init_channels, layers=config.layers, batch=b, compute_dtype=dtype, **cost)
    step_s = row["time_per_call_s"]
    peak = peaks["bf16" if dtype == "bfloat16" else "tf32"]  # FLOP/s
    summary = {"name": name + "-derived", "part": "darts_derived", "compute_dtype": dtype,
               "images_per_s": b / step_s, "energy_per_epoch_j": row["energy_per_call_j"] * per_epoch,
               "steps_per_epoch": per_epoch, "xla_tflop_per_s": cost["xla_flops"] / step_s / 1e12,
               "mfu": cost["xla_flops"] / step_s / peak,
               "mfu_peak": f"{args.peak_device} dense {'bf16' if dtype == 'bfloat16' else 'tf32'} "
                           f"{peak / 1e12:g} TFLOP/s (datasheet)"}
    with open(rec.path, "a") as f:
      f.write(json.dumps(summary) + "\n")
    print(f"{name}: {summary['images_per_s']:.0f} images/s, MFU {summary['mfu']:.3f}, "
          f"{summary['energy_per_epoch_j'] / 1e3:.2f} kJ/epoch", flush=True)


PARTS = {"nb201": nb201, "tabular": tabular, "darts": darts}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output folder (appended to)")
  parser.add_argument("--parts", default="nb201,tabular,darts")
  parser.add_argument("--min_window_s", type=float, default=0.5)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--cooldown_s", type=float, default=0.05)
  parser.add_argument("--idle_s", type=float, default=3.0)
  parser.add_argument("--nb201_cells", type=int, default=8)
  parser.add_argument("--nb201_batch", type=int, default=256)
  parser.add_argument("--nb201_batches", default="", help="comma list (default: 1,--nb201_batch)")
  parser.add_argument("--csv_from", default="", help="only write DIR/nb201_targets.csv from this "
                      "networks.jsonl (no measurement)")
  parser.add_argument("--tabular_random", type=int, default=2, help="random ResNet and FT-T archs")
  parser.add_argument("--tabular_batch", type=int, default=4096)
  parser.add_argument("--darts_dtypes", default="float32,bfloat16")
  parser.add_argument("--darts_channels", type=int, default=36, help="smaller for a CPU check")
  parser.add_argument("--darts_layers", type=int, default=20)
  parser.add_argument("--peak_device", default="h200-sxm", help="DEVICE_SPECS name for the MFU peak")
  parser.add_argument("--fake_meter", action="store_true", help="simulated energy (checks the script)")
  args = parser.parse_args()
  if args.csv_from:
    n = nb201_targets_csv(Path(args.csv_from), Path(args.out) / "nb201_targets.csv")
    print(f"{n} NB201 cells -> {Path(args.out) / 'nb201_targets.csv'}")
    return
  parts = args.parts.split(",")
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f"--parts: unknown {unknown}; known: {sorted(PARTS)}")
  if args.fake_meter:
    meter = FakeEnergyMeter(250.0, idle_power_w=70.0, counter_period_s=1e-3, clock=time.perf_counter,
                            sleep=time.sleep)
  else:
    meter = NvmlEnergyMeter(0)
    if jax.default_backend() != "gpu":
      parser.error(f"NVML sees {meter.device_name} but JAX runs on {jax.default_backend()!r}.")
  out = Path(args.out)
  idle_w = meter.idle_power_w(args.idle_s)
  print(f"{meter.device_name}: idle {idle_w:.1f} W; JAX {jax.__version__} on {jax.default_backend()}",
        flush=True)
  rec = Recorder(out, meter, idle_w)
  t0 = time.perf_counter()
  for part in parts:
    t = time.perf_counter()
    PARTS[part](rec, args)
    print(f"[{part}] {time.perf_counter() - t:.0f} s", flush=True)
    if part == "nb201":
      nb201_targets_csv(rec.path, out / "nb201_targets.csv")
  print(f"done in {time.perf_counter() - t0:.0f} s; idle after {meter.idle_power_w(args.idle_s):.1f} W",
        flush=True)


if __name__ == "__main__":
  main()
