"""Tests for the NB201 / HW-NAS-Bench table and the HW-NAS-Bench pickle reader.

Real-data tests read the shared files (``shared_data`` fixture); error-path tests write small
modified copies into ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from cenas_jax.data import nasbench
from cenas_jax.errors import DataError, DataUnavailableError
from cenas_jax.fileio import sha256_file
from cenas_jax.spaces import nb201
from third_party.hw_nas_bench import reader

BEST_ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
             "|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
ROW0_ARCH = ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
             "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
BEST_HW_INDEX = 13714  # Best CIFAR-10 cell with HW data (same 94.3733 % as 6111, which has none).
HW_FIELDS = tuple(nasbench.HW_METRIC_FIELDS.values()) + ("flops_m",)


@pytest.fixture(scope="module")
def table(shared_data: Path) -> nasbench.NB201Table:
  return nasbench.load_nb201_table(shared_data)


# ------------------------------------------------------------------------------------------------
# Real data.


def test_shape_and_index_order(table):
  assert len(table) == 15625
  np.testing.assert_array_equal(table.index, np.arange(15625))
  assert table.ops.dtype == np.int8 and table.ops.shape == (15625, 6)
  assert table.arch_str.dtype == object
  # ops and arch strings agree row by row, and every cell appears once.
  np.testing.assert_array_equal(nb201.encode_arch_strs(table.arch_str), table.ops)
  assert np.unique(nb201.ops_to_code(table.ops)).size == 15625
  for f in nasbench.METRIC_FIELDS:
    assert table.column(f).dtype == np.float64 and table.column(f).shape == (15625,)


def test_nats_accuracies(table):
  assert int(np.argmax(table.test_acc_cifar10)) == 6111
  assert table.test_acc_cifar10[6111] == pytest.approx(94.3733, abs=1e-4)
  assert table.arch_str[6111] == BEST_ARCH
  assert table.arch_of(6111) == BEST_ARCH and table.index_of(BEST_ARCH) == 6111
  assert int(np.argmax(table.test_acc_cifar100)) == 9930
  assert table.test_acc_cifar100.max() == pytest.approx(73.5133, abs=1e-4)
  assert int(np.argmax(table.test_acc_imagenet16_120)) == 857
  assert table.test_acc_imagenet16_120.max() == pytest.approx(47.3111, abs=1e-4)
  assert table.test_acc_cifar10.min() == pytest.approx(10.0)
  assert table.test_acc_cifar100.min() == pytest.approx(1.0)
  assert table.test_acc_imagenet16_120.min() == pytest.approx(0.8333, abs=1e-4)
  assert table.arch_str[0] == ROW0_ARCH
  assert table.test_acc_cifar10[0] == pytest.approx(85.8633, abs=1e-4)
  assert table.test_acc_cifar100[0] == pytest.approx(52.9133, abs=1e-4)
  assert table.test_acc_imagenet16_120[0] == pytest.approx(26.6333, abs=1e-4)


def test_supernet_json_accuracies(table):
  for name, lo, med, hi in [("nb201_json_acc", 10.0, 90.73, 94.37),
                            ("oneshot_acc", 8.80, 62.38, 81.82),
                            ("fewshot_acc", 7.94, 47.64, 77.00)]:
    col = table.column(name)
    assert not np.isnan(col).any()
    assert col.min() == pytest.approx(lo) and col.max() == pytest.approx(hi)
    assert np.median(col) == pytest.approx(med, abs=0.005)
  assert table.nb201_json_acc[6111] == pytest.approx(94.37)
  # The genotype keys map to the same cells as the NATS arch strings (PROVENANCE.md comparison).
  diff = np.abs(table.nb201_json_acc - table.test_acc_cifar10)
  assert diff.mean() == pytest.approx(0.027, abs=0.001)
  assert diff.max() == pytest.approx(2.22, abs=0.01)
  assert np.mean(diff <= 0.01) == pytest.approx(0.85, abs=0.01)
  rho_one = scipy.stats.spearmanr(table.oneshot_acc, table.nb201_json_acc)[0]
  rho_few = scipy.stats.spearmanr(table.fewshot_acc, table.nb201_json_acc)[0]
  assert rho_one == pytest.approx(0.677, abs=0.001)
  assert rho_few == pytest.approx(0.741, abs=0.001)


def test_disconnected_cells_score_chance(table):
  connected = nb201.is_connected_batch(table.ops)
  assert int((~connected).sum()) == 15625 - 15284
  np.testing.assert_array_equal(table.nb201_json_acc[~connected], 10.0)
  assert np.all(table.nb201_json_acc[connected] > 10.0)


def test_hw_columns(table):
  assert int(table.has_hw.sum()) == 12554
  hw = table.hw_indices()
  assert hw.size == 12554 and hw[0] == 1 and hw[-1] == 14655
  assert not table.has_hw[0]
  assert not table.has_hw[6111]  # The best CIFAR-10 cell is outside the 80% subset...
  assert hw[np.argmax(table.test_acc_cifar10[hw])] == BEST_HW_INDEX  # ...13714 ties it.
  assert table.test_acc_cifar10[BEST_HW_INDEX] == table.test_acc_cifar10[6111]
  # Missing is NaN, never zero, and nowhere a -1 marker.
  for f in HW_FIELDS:
    col = table.column(f)
    assert np.isnan(col[~table.has_hw]).all(), f
    assert (col[~np.isnan(col)] > 0).all(), f
  assert np.isnan(table.edgegpu_energy_mj[0])
  energy = table.edgegpu_energy_mj[table.has_hw]
  assert energy.min() == pytest.approx(2.172, abs=1e-3)
  assert energy.max() == pytest.approx(44.863, abs=1e-3)
  # edgetpu_latency == -1 in the CSV (3,768 rows) is read as NaN; the other metrics are complete.
  assert int(np.isnan(table.edgetpu_latency_ms[table.has_hw]).sum()) == 3768
  for f in HW_FIELDS:
    if f != "edgetpu_latency_ms":
      assert not np.isnan(table.column(f)[table.has_hw]).any(), f


def test_known_hw_cell_from_csv(table):
  # Index 0 (the official README example) is not in the subset; index 1 is (values from the CSV).
  expected = {
      "edgegpu_latency_ms": 6.547689437866211, "edgegpu_energy_mj": 29.997147878011067,
      "raspi4_latency_ms": 54.77739761998237, "edgetpu_latency_ms": 1.438988361000156,
      "pixel3_latency_ms": 17.2381, "eyeriss_latency_ms": 7.577780000000003,
      "eyeriss_energy_mj": 1.5644240284999995, "eyeriss_arithmetic_intensity": 20.86006697108513,
      "fpga_latency_ms": 5.31536, "fpga_energy_mj": 37.20752, "flops_m": 113.95137,
  }
  for f, v in expected.items():
    assert table.column(f)[1] == v, f
  assert table.arch_of(1) == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                              "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def _hypervolume_2d(points: np.ndarray, ref: tuple[float, float]) -> tuple[float, np.ndarray]:
  """Area dominated by ``points`` (both objectives maximized) above ``ref``; also the front."""
  pts = points[(points[:, 0] > ref[0]) & (points[:, 1] > ref[1])]
  order = np.lexsort((-pts[:, 1], -pts[:, 0]))  # By objective 0 descending, ties by 1 descending.
  front, best1 = [], -np.inf
  for p in pts[order]:
    if p[1] > best1:
      front.append(p)
      best1 = p[1]
  front = np.array(front)
  # Sweep in objective-0 descending order: each front point adds a strip above the previous
  # point's objective 1, of width (its objective 0 - ref).
  area, prev1 = 0.0, ref[1]
  for p0, p1 in front:
    area += (p0 - ref[0]) * (p1 - prev1)
    prev1 = p1
  return area, front


def test_hypervolume_sanity(table):
  hw = table.hw_indices()
  objs = table.objectives(hw)  # [acc %, -edgegpu_energy mJ]
  assert objs.shape == (12554, 2)
  hv, front = _hypervolume_2d(objs, (0.0, -50.0))
  assert hv == pytest.approx(4152.7, abs=0.1)
  assert len(front) == 31
  assert front[0] == pytest.approx([94.37, -32.65], abs=0.01)
  assert front[-2] == pytest.approx([86.56, -6.07], abs=0.01)
  assert front[-1] == pytest.approx([10.0, -2.172], abs=0.001)  # The cheapest cell, at chance.
  # CE-NAS's full-space _max_hv is 4150.72; the subset's is within 0.07% of it.
  assert abs(hv - 4150.7236) / 4150.7236 < 7e-4


def test_objectives(table):
  obj = table.objectives([BEST_HW_INDEX, 1])
  np.testing.assert_allclose(obj[:, 0], table.test_acc_cifar10[[BEST_HW_INDEX, 1]])
  np.testing.assert_allclose(obj[:, 1], -table.edgegpu_energy_mj[[BEST_HW_INDEX, 1]])
  assert obj[0] == pytest.approx([94.3733, -32.6509], abs=1e-4)
  single = table.objectives(1, metrics=("flops_m",), maximize=(False,))
  assert single.shape == (1,) and single[0] == -113.95137
  with pytest.raises(ValueError, match="edgegpu_energy_mj is unknown.*NB201 index 0"):
    table.objectives([1, 0])
  with pytest.raises(ValueError, match="Unknown NB201Table column"):
    table.objectives([1], metrics=("energy",), maximize=(True,))
  with pytest.raises(ValueError, match="out of range"):
    table.objectives([15625])
  with pytest.raises(ValueError, match="differ in length"):
    table.objectives([1], metrics=("flops_m",), maximize=(True, False))


def test_index_lookups(table):
  for i in (0, 1, 777, 15624):
    assert table.index_of(table.arch_of(i)) == i
  np.testing.assert_array_equal(table.indices_of([BEST_ARCH, ROW0_ARCH]), [6111, 0])
  np.testing.assert_array_equal(table.indices_of_ops(table.ops[[5, 9, 6111]]), [5, 9, 6111])
  assert int(table.indices_of_ops(nb201.arch_str_to_ops(BEST_ARCH))) == 6111
  with pytest.raises(ValueError, match="Malformed NB201 arch string.*unknown op 'conv_7x7'"):
    table.index_of(BEST_ARCH.replace("nor_conv_1x1", "conv_7x7"))
  with pytest.raises(ValueError, match="Malformed NB201 arch string"):
    table.index_of("resnet")
  with pytest.raises(ValueError, match="out of range"):
    table.arch_of(-1)


def test_subset(table):
  sub = table.subset(table.has_hw)
  assert len(sub) == 12554
  np.testing.assert_array_equal(sub.index, table.hw_indices())
  assert sub.arch_of(BEST_HW_INDEX) == table.arch_of(BEST_HW_INDEX)
  assert sub.index_of(table.arch_of(BEST_HW_INDEX)) == BEST_HW_INDEX
  np.testing.assert_array_equal(sub.objectives([BEST_HW_INDEX]), table.objectives([BEST_HW_INDEX]))
  for absent in (ROW0_ARCH, BEST_ARCH):
    with pytest.raises(ValueError, match="well-formed but not in this table"):
      sub.index_of(absent)
  with pytest.raises(ValueError, match="not in this table"):
    sub.arch_of(0)
  picked = table.subset([6111, 3, 0])
  np.testing.assert_array_equal(picked.index, [6111, 3, 0])
  np.testing.assert_array_equal(picked.test_acc_cifar10, table.test_acc_cifar10[[6111, 3, 0]])
  assert picked.hw_source == "csv" and picked.sources == table.sources
  with pytest.raises(ValueError, match="repeated"):
    table.subset([1, 1])
  with pytest.raises(ValueError, match="mask has shape"):
    table.subset(np.ones(3, dtype=bool))


def test_read_only_and_cached(table, shared_data):
  with pytest.raises(ValueError):
    table.test_acc_cifar10[0] = 0.0
  assert nasbench.load_nb201_table(shared_data) is nasbench.load_nb201_table(str(shared_data))


def test_provenance(table, shared_data):
  prov = table.provenance()
  assert prov["hw_source"] == "csv" and prov["num_rows"] == 15625
  files = prov["files"]
  assert set(files) == {"nas_bench_201", "hw_nas_bench_csv", "nb201_json_acc", "oneshot_acc",
                        "fewshot_acc"}
  nats = shared_data / "nas_bench_201" / "nats_tss_test_acc_200ep.csv.gz"
  assert Path(files["nas_bench_201"]["path"]) == nats.resolve()
  assert files["nas_bench_201"]["sha256"] == sha256_file(nats)
  json.dumps(prov)  # Plain JSON-serializable values.


# ------------------------------------------------------------------------------------------------
# Bad input (modified copies in tmp_path).


def _root_with(tmp_path: Path, shared_data: Path, replace: dict[tuple[str, str], bytes | None]
               ) -> Path:
  """A data root linking to the shared files, with some files replaced (None: removed)."""
  root = tmp_path / "data"
  files = [nasbench.NATS_CSV, nasbench.HW_CSV] + list(nasbench.ACC_JSONS.values())
  for parts in files:
    dest = root.joinpath(*parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if parts in replace:
      if replace[parts] is not None:
        dest.write_bytes(replace[parts])
    else:
      os.symlink(shared_data.joinpath(*parts), dest)
  return root


def _csv_lines(shared_data: Path, parts: tuple[str, str]) -> list[str]:
  with gzip.open(shared_data.joinpath(*parts), "rt", newline="") as f:
    return f.read().splitlines(keepends=True)


def _gz(lines: list[str]) -> bytes:
  return gzip.compress("".join(lines).encode())


def test_hw_arch_mismatch_names_file_and_line(tmp_path, shared_data):
  lines = _csv_lines(shared_data, nasbench.HW_CSV)
  fields = lines[5].split(",")  # Line 6 of the file (header is line 1).
  fields[1] = BEST_ARCH if fields[1] != BEST_ARCH else ROW0_ARCH
  lines[5] = ",".join(fields)
  root = _root_with(tmp_path, shared_data, {nasbench.HW_CSV: _gz(lines)})
  with pytest.raises(DataError,
                     match=r"hwnasbench_nb201_cifar10_subset\.csv\.gz, line 6: arch_str"):
    nasbench.load_nb201_table(root)


def test_bad_headers(tmp_path, shared_data):
  lines = _csv_lines(shared_data, nasbench.HW_CSV)
  lines[0] = lines[0].replace("edgegpu_energy", "edgegpu_energy_j")
  root = _root_with(tmp_path, shared_data, {nasbench.HW_CSV: _gz(lines)})
  with pytest.raises(DataError, match="hwnasbench.*unexpected header"):
    nasbench.load_nb201_table(root)
  nats = _csv_lines(shared_data, nasbench.NATS_CSV)
  nats[0] = nats[0].replace("CIFAR10TestAccuracy200Epochs", "acc")
  root2 = _root_with(tmp_path / "b", shared_data, {nasbench.NATS_CSV: _gz(nats)})
  with pytest.raises(DataError, match="nats_tss_test_acc_200ep.*unexpected header"):
    nasbench.load_nb201_table(root2)


def test_bad_values(tmp_path, shared_data):
  nats = _csv_lines(shared_data, nasbench.NATS_CSV)
  nats[3] = "abc" + nats[3][nats[3].index(","):]
  root = _root_with(tmp_path / "a", shared_data, {nasbench.NATS_CSV: _gz(nats)})
  with pytest.raises(DataError, match="line 4: CIFAR10TestAccuracy200Epochs='abc'"):
    nasbench.load_nb201_table(root)
  short = _csv_lines(shared_data, nasbench.NATS_CSV)[:-1]
  root = _root_with(tmp_path / "b", shared_data, {nasbench.NATS_CSV: _gz(short)})
  with pytest.raises(DataError, match="15624 data rows; expected 15625"):
    nasbench.load_nb201_table(root)
  hw = _csv_lines(shared_data, nasbench.HW_CSV)
  fields = hw[2].split(",")
  fields[3] = "-2.5"  # edgegpu_energy
  hw[2] = ",".join(fields)
  root = _root_with(tmp_path / "c", shared_data, {nasbench.HW_CSV: _gz(hw)})
  with pytest.raises(DataError, match="line 3: edgegpu_energy=-2.5 is negative"):
    nasbench.load_nb201_table(root)


def test_bad_json(tmp_path, shared_data):
  path = shared_data.joinpath(*nasbench.ACC_JSONS["oneshot_acc"])
  data = json.loads(path.read_text())
  key = next(iter(data))
  data.pop(key)
  root = _root_with(tmp_path / "a", shared_data,
                    {nasbench.ACC_JSONS["oneshot_acc"]: json.dumps(data).encode()})
  with pytest.raises(DataError, match="one-shot-supernet.json: 15624 entries"):
    nasbench.load_nb201_table(root)
  data[key.replace("avg_pool_3x3", "max_pool_3x3", 1)] = 50.0
  root = _root_with(tmp_path / "b", shared_data,
                    {nasbench.ACC_JSONS["oneshot_acc"]: json.dumps(data).encode()})
  with pytest.raises(DataError, match="one-shot-supernet.json.*unknown op 'max_pool_3x3'"):
    nasbench.load_nb201_table(root)


def test_missing_file(tmp_path, shared_data):
  root = _root_with(tmp_path, shared_data, {nasbench.ACC_JSONS["fewshot_acc"]: None})
  with pytest.raises(DataUnavailableError, match="few-shot-supernet.json"):
    nasbench.load_nb201_table(root)


# ------------------------------------------------------------------------------------------------
# HW-NAS-Bench pickle reader.


class _RunsShell:
  def __init__(self, marker: Path):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_load_plain_pickle(tmp_path, protocol):
  obj = {"nasbench201": {"cifar10": {"edgegpu_energy": [1.5, 2, None, True],
                                     "config": {0: {"arch_str": ROW0_ARCH, "C": 16}}},
                         "t": (1, "x", -3.25)}}
  path = tmp_path / "small.pickle"
  path.write_bytes(pickle.dumps(obj, protocol=protocol))
  assert reader.restricted_load(path) == obj


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_load_refuses_globals(tmp_path, protocol):
  marker = tmp_path / "executed"
  path = tmp_path / "evil.pickle"
  path.write_bytes(pickle.dumps({"x": [_RunsShell(marker)]}, protocol=protocol))
  with pytest.raises(reader.UnsafePickleError, match=r"evil\.pickle.*global (posix|os|nt)\.system"):
    reader.restricted_load(path)
  assert not marker.exists()

  path.write_bytes(pickle.dumps({"values": np.arange(3.0)}, protocol=protocol))
  with pytest.raises(reader.UnsafePickleError, match="global numpy"):
    reader.restricted_load(path)


def test_restricted_load_refuses_other_types(tmp_path):
  path = tmp_path / "p.pickle"
  path.write_bytes(pickle.dumps({"s": {1, 2}}, protocol=4))  # EMPTY_SET opcode: no global needed.
  with pytest.raises(reader.UnsafePickleError, match="type set"):
    reader.restricted_load(path)
  path.write_bytes(pickle.dumps([b"raw"], protocol=4))
  with pytest.raises(reader.UnsafePickleError, match="type bytes"):
    reader.restricted_load(path)
  path.write_bytes(b"this is not a pickle")
  with pytest.raises(DataError, match="not a readable pickle"):
    reader.restricted_load(path)


def _synthetic_hw_pickle(table: nasbench.NB201Table) -> dict:
  """HW-NAS-Bench layout: CSV values where known, made-up positive values elsewhere."""
  idx = np.arange(15625)
  space = {}
  for d, dataset in enumerate(reader.DATASETS):
    block = {}
    for m, (metric, field) in enumerate(nasbench.HW_METRIC_FIELDS.items()):
      made_up = 1.0 + m + d + idx / 15625.0
      values = np.where(table.has_hw, table.column(field), made_up)
      if metric == "edgetpu_latency":
        values = np.where(np.isnan(values), -1.0, values)  # HW-NAS-Bench's marker.
      if dataset == "cifar10":
        block[metric] = values.tolist()  # List form.
      else:
        block[metric] = {i: float(values[i]) for i in range(0, 15625, 1000)}  # Sparse dict form.
    block["config"] = [{"name": "infer.tiny", "C": 16, "N": 5, "arch_str": s, "num_classes": 10}
                       for s in table.arch_str.tolist()]
    space[dataset] = block
  return {"nasbench201": space, "fbnet": {"edgegpu_latency": {"ConvBlock_H32": 0.1}}}


def test_pickle_conversion_and_table_option(tmp_path, shared_data, table, monkeypatch):
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path / "cache"))
  obj = _synthetic_hw_pickle(table)
  pkl = tmp_path / "HW-NAS-Bench-v1_0.pickle"
  pkl.write_bytes(pickle.dumps(obj, protocol=4))

  out = reader.convert_hw_nas_bench_pickle(pkl, tmp_path / "hw.npz")
  arrays, meta = reader.load_hw_nas_bench_cache(out)
  assert meta["source_sha256"] == sha256_file(pkl) and meta["format"] == reader.CACHE_FORMAT
  np.testing.assert_array_equal(arrays["cifar10__edgegpu_energy"],
                                obj["nasbench201"]["cifar10"]["edgegpu_energy"])
  sparse = arrays["cifar100__fpga_energy"]
  assert np.isnan(sparse).sum() == 15625 - 16 and sparse[1000] == obj["nasbench201"]["cifar100"][
      "fpga_energy"][1000]
  assert arrays["cifar10__arch_str"][6111] == BEST_ARCH

  t = nasbench.load_nb201_table(shared_data, hw_pickle=pkl)
  assert t.hw_source == "pickle" and bool(t.has_hw.all())
  hw = table.has_hw
  np.testing.assert_array_equal(t.edgegpu_energy_mj[hw], table.edgegpu_energy_mj[hw])
  np.testing.assert_array_equal(np.isnan(t.edgetpu_latency_ms[hw]),
                                np.isnan(table.edgetpu_latency_ms[hw]))  # -1 -> NaN.
  assert t.edgegpu_energy_mj[0] == pytest.approx(1.0 + 1)
  np.testing.assert_array_equal(t.flops_m, table.flops_m)  # FLOPs still from the CSV.
  np.testing.assert_array_equal(t.test_acc_cifar10, table.test_acc_cifar10)
  files = t.provenance()["files"]
  assert files["hw_nas_bench_pickle"]["sha256"] == sha256_file(pkl)
  cache = Path(files["hw_nas_bench_cache"]["path"])
  assert cache == reader.default_cache_path(pkl) and cache.is_relative_to(tmp_path / "cache")

  # Converted once: a second load reuses the cache; the .npz itself is accepted too.
  mtime = cache.stat().st_mtime_ns
  nasbench.clear_cache()
  t2 = nasbench.load_nb201_table(shared_data, hw_pickle=pkl)
  assert cache.stat().st_mtime_ns == mtime
  np.testing.assert_array_equal(t2.edgegpu_latency_ms, t.edgegpu_latency_ms)
  t3 = nasbench.load_nb201_table(shared_data, hw_pickle=cache)
  np.testing.assert_array_equal(t3.fpga_energy_mj, t.fpga_energy_mj)
  nasbench.clear_cache()


def test_pickle_layout_errors(tmp_path, shared_data, table, monkeypatch):
  monkeypatch.setenv("CENAS_DATA_DIR", str(tmp_path / "cache"))
  obj = _synthetic_hw_pickle(table)
  cfg = obj["nasbench201"]["cifar10"]["config"]
  cfg[7], cfg[8] = cfg[8], cfg[7]
  pkl = tmp_path / "swapped.pickle"
  pkl.write_bytes(pickle.dumps(obj, protocol=4))
  with pytest.raises(DataError, match="swapped.pickle: the config arch_str of index 7"):
    nasbench.load_nb201_table(shared_data, hw_pickle=pkl)

  del obj["nasbench201"]["cifar100"]["eyeriss_energy"]
  pkl.write_bytes(pickle.dumps(obj, protocol=2))
  with pytest.raises(DataError, match=r"\['cifar100'\]\['eyeriss_energy'\] is missing"):
    reader.convert_hw_nas_bench_pickle(pkl, tmp_path / "x.npz")
  assert not (tmp_path / "x.npz").exists()

  bad = tmp_path / "bad.npz"
  np.savez(bad, a=np.zeros(3))
  with pytest.raises(DataError, match="not a HW-NAS-Bench cache"):
    reader.load_hw_nas_bench_cache(bad)
  with pytest.raises(DataUnavailableError, match="HW-NAS-Bench-v1_0.pickle"):
    reader.cached_nb201_arrays(tmp_path / "absent.pickle")


def test_download_metadata():
  remote = reader.HW_NAS_BENCH_PICKLE
  assert remote.url.startswith("https://raw.githubusercontent.com/GATECH-EIC/HW-NAS-Bench/")
  assert remote.url.endswith("/HW-NAS-Bench-v1_0.pickle")
  assert remote.filename == "HW-NAS-Bench-v1_0.pickle"
  assert remote.sha256 is None  # Unknown: not pinned.


@pytest.mark.parametrize("bad_value, reason", [
    (float("nan"), "not a finite number"), (float("inf"), "not a finite number"),
    (10**400, "not a finite number"), ("1.0", "not a number"), (True, "not a number"),
])
def test_pickle_bad_metric_values(tmp_path, table, bad_value, reason):
  obj = _synthetic_hw_pickle(table)
  obj["nasbench201"]["cifar10"]["fpga_latency"][42] = bad_value
  pkl = tmp_path / "v.pickle"
  pkl.write_bytes(pickle.dumps(obj, protocol=4))
  with pytest.raises(DataError, match=rf"\['cifar10'\]\['fpga_latency'\]\[42\]: value .* {reason}"):
    reader.convert_hw_nas_bench_pickle(pkl, tmp_path / "v.npz")


def test_subset_columns_refuse_arch_indices(table):
  """Regression: ``sub.column[sub.index_of(s)]`` silently read another cell's value."""
  idx = [5000, 12, 777]
  sub = table.subset(idx)
  arch = table.arch_of(777)
  with pytest.raises(IndexError, match="rows, not the NB201 arch indices"):
    sub.edgegpu_energy_mj[sub.index_of(arch)]
  with pytest.raises(IndexError, match="value"):
    sub.test_acc_cifar10[sub.indices_of([arch])]
  assert sub.value(arch, "edgegpu_energy_mj") == table.edgegpu_energy_mj[777]
  assert sub.value(777, "test_acc_cifar10") == table.value(arch, "test_acc_cifar10")
  assert sub.edgegpu_energy_mj[2] == table.edgegpu_energy_mj[777]  # rows still index rows
  assert table.edgegpu_energy_mj[table.index_of(arch)] == table.edgegpu_energy_mj[777]  # full table
