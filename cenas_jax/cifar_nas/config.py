"""Settings of ``experiments.cifar_search`` as nested frozen dataclasses (flat flags, unique names).

The proposal, agent and pre-training settings are the HW-NAS-Bench study's own classes, so the two
binaries spell them the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cenas_jax.cifar_nas.jobs import DataSpec
from cenas_jax.cifar_nas.problem import OBJECTIVES
from cenas_jax.cluster.config import (AgentSettings, PretrainConfig, ProposalConfig, _check_choices,
                                      check_trace_settings, check_utc_time)
from cenas_jax.errors import ConfigError
from cenas_jax.training.cifar import RecipeConfig

STRATEGIES = ("cenas", "cenas_faithful", "heuristic", "vanilla", "fixed")


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
  """How a proposal is trained from scratch (defaults: DARTS' evaluation recipe, as CE-NAS)."""

  init_channels: int = 36
  layers: int = 20
  epochs: int = 600
  batch_size: int = 96
  learning_rate: float = 0.025
  cutout_length: int = 16
  drop_path_prob: float = 0.2
  auxiliary_weight: float = 0.4
  compute_dtype: str = "float32"

  def recipe(self) -> RecipeConfig:
    try:
      return RecipeConfig(epochs=self.epochs, batch_size=self.batch_size,
                          learning_rate=self.learning_rate, cutout_length=self.cutout_length,
                          drop_path_prob=self.drop_path_prob, auxiliary_weight=self.auxiliary_weight,
                          init_channels=self.init_channels, layers=self.layers,
                          compute_dtype=self.compute_dtype)
    except ValueError as e:
      raise ConfigError(str(e).split(" ")[0], str(e)) from None


@dataclasses.dataclass(frozen=True)
class SupernetSettings:
  """The weight-sharing supernet of the sampling GPUs (defaults: DARTS' search network)."""

  supernet_channels: int = 16
  supernet_layers: int = 8
  supernet_epochs: int = 50
  supernet_batch_size: int = 64
  supernet_learning_rate: float = 0.025
  few_shot: bool = False
  calib_batches: int = 4

  def recipe(self) -> RecipeConfig:
    from cenas_jax.training.supernet import SEARCH_RECIPE

    try:
      return dataclasses.replace(SEARCH_RECIPE, epochs=self.supernet_epochs,
                                 batch_size=self.supernet_batch_size,
                                 learning_rate=self.supernet_learning_rate,
                                 init_channels=self.supernet_channels, layers=self.supernet_layers)
    except ValueError as e:
      raise ConfigError("supernet_" + str(e).split(" ")[0], str(e)) from None


@dataclasses.dataclass(frozen=True)
class CifarSearchConfig:
  """Everything that defines a CIFAR-10 search (saved in the workdir; a resume must match it).

  Attributes:
    strategy: who splits the GPUs hour by hour (``cenas``: the allocation agent).
    seed: proposals, initial samples, supernet and training seeds derive from it.
    cifar_path: CIFAR-10 archive or folder; "" downloads the official archive (sha256-checked);
      ``shared:<path>`` is a file under the shared data folder (``$CENAS_SHARED_DATA``).
    train_images, valid_images, test_images: the data split (``jobs.DataSpec``).
    include_genotypes: published cells (``spaces.darts.GENOTYPES`` names) or genotype JSON files that
      are candidates from the start.
    region, trace_dataset, ci_column, trace_path, start: the carbon-intensity trace and the search
      window's first hour (as ``hwnas_search``).
    clock: ``replay`` (one trace hour = ``hour_s`` device-seconds, deterministic) or ``wall``.
    live_zone: with ``clock=wall``, read each hour's intensity from Electricity Maps for this zone
      at the hour's start (token in ``ELECTRICITYMAPS_TOKEN``) instead of the trace.
    hours: trace hours the search runs.
    hour_s: device-seconds per trace hour under ``replay`` (``wall``: 3600).
    pace_wall_s: under ``replay``, wall seconds to wait per hour at least (0: none).
    n_gpus: GPUs the agent splits between sampling and evaluation.
    n_init: random candidates trained before the first hour (uncharged, as the official code).
    candidates_per_hour: genotypes sampled each hour for LaMOO to classify.
    queue_capacity, screen_per_gpu_hour, idle_power_w, pue, switch_overhead_s: the pool
      (``cluster.pool.PoolConfig``); training and sampling power and the time to score a proposal
      come from the energy model's prediction for ``energy_device``.
    history_hours, reward_accounting: as the HW-NAS-Bench study.
    energy_device: the NVIDIA device whose predicted step time and energy price the search
      (``energy.DEVICE_SPECS``).
    backend: where training jobs run: ``local`` (threads over local devices) or ``ray``.
    ray_address: a running Ray cluster ("" starts one on this machine).
    n_devices: local devices the supernet trains and scores on, data-parallel, and, with the local
      backend, the devices training jobs run on (0: all).
    devices_per_job: devices one training job trains on, data-parallel.
    coordinator_address, num_processes, process_id: a search over many hosts
      (``cifar_nas.multihost``): process 0's ``host:port`` ("": one host), the number of processes
      and this one's index (0 and -1: from the cluster environment, as ``jax.distributed``).
    objectives: ``accuracy,params`` (the paper's) or ``accuracy,params,energy``: the third is the
      trained network's predicted inference energy on ``energy_device`` (mJ per image), minimized.
    inference_batch: images per inference call the energy objective is priced at. Default 1: the
      cost of serving one request, the setting of on-device inference benchmarks (HW-NAS-Bench,
      nn-Meter); at 1 a small network's energy is mostly its kernel launches, so the objective
      ranks cells by kernel count as much as by FLOPs, while a large batch ranks them by FLOPs and
      bytes.
  """

  strategy: Literal["cenas", "cenas_faithful", "heuristic", "vanilla", "fixed"] = "cenas"
  seed: int = 0
  cifar_path: str = ""
  train_images: int = 0
  valid_images: int = 5000
  test_images: int = 0
  include_genotypes: tuple[str, ...] = ()
  region: str = "US-CAL-CISO"
  trace_dataset: Literal["forecasting", "benchmark", "electricitymaps"] = "forecasting"
  ci_column: Literal["lifecycle", "direct"] = "lifecycle"
  trace_path: str = ""
  start: str = "2021-07-02T06:00:00+00:00"
  clock: Literal["replay", "wall"] = "replay"
  live_zone: str = ""
  hours: int = 80
  hour_s: float = 3600.0
  pace_wall_s: float = 0.0
  n_gpus: int = 8
  n_init: int = 10
  candidates_per_hour: int = 200
  queue_capacity: int = 10
  screen_per_gpu_hour: int = 0
  idle_power_w: float = 60.0
  pue: float = 1.0
  switch_overhead_s: float = 0.0
  history_hours: int = 168
  reward_accounting: Literal["paper", "full"] = "paper"
  energy_device: str = "h100-sxm"
  backend: Literal["local", "ray"] = "local"
  ray_address: str = ""
  n_devices: int = 0
  devices_per_job: int = 1
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1
  objectives: tuple[str, ...] = OBJECTIVES[:2]
  inference_batch: int = 1
  network: NetworkSettings = NetworkSettings()
  supernet: SupernetSettings = SupernetSettings()
  lamoo: ProposalConfig = ProposalConfig()
  agent: AgentSettings = AgentSettings()
  pretrain: PretrainConfig = PretrainConfig()

  def __post_init__(self):
    _check_choices(self)
    for name in ("hours", "n_gpus", "candidates_per_hour", "history_hours", "devices_per_job",
                 "inference_batch"):
      if getattr(self, name) < 1:
        raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
    for name in ("n_init", "queue_capacity", "screen_per_gpu_hour", "n_devices", "valid_images",
                 "train_images", "test_images"):
      if getattr(self, name) < 0:
        raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
    if self.clock == "wall" and self.hour_s != 3600.0:
      raise ConfigError("hour_s", "--clock=wall runs real hours; leave --hour_s at 3600")
    if self.live_zone and self.clock != "wall":
      raise ConfigError("live_zone", "live intensities need --clock=wall (a replay reads a trace)")
    if self.live_zone and self.strategy == "cenas" and self.agent.agent_ci_input != "actual":
      raise ConfigError("live_zone", "a live run has no future intensities: use "
                        "--agent_ci_input=actual")
    if tuple(self.objectives) not in (OBJECTIVES[:2], OBJECTIVES):
      raise ConfigError("objectives", f"must be {','.join(OBJECTIVES[:2])} or "
                        f"{','.join(OBJECTIVES)} (in that order), got {','.join(self.objectives)!r}")
    if "energy" in self.objectives and self.lamoo.proposal == "ehvi":
      raise ConfigError("objectives", "the energy objective needs --proposal=rejection (the EHVI "
                        "proposal is exact 2-D only)")
    if self.n_init < 1:
      raise ConfigError("n_init", "needs at least one initial training (the loop's first HV)")
    if not self.live_zone:
      check_trace_settings(self)
    check_utc_time("start", self.start)
    self.pretrain.check(used=self.strategy == "cenas")
    from cenas_jax.energy.specs import DEVICE_SPECS

    if self.energy_device not in DEVICE_SPECS:
      raise ConfigError("energy_device", f"unknown {self.energy_device!r}; choose one of "
                        f"{', '.join(sorted(DEVICE_SPECS))}")
    if self.num_processes < 0 or self.process_id < -1:
      raise ConfigError("num_processes" if self.num_processes < 0 else "process_id",
                        "must be >= 0 (num_processes) and >= -1 (process_id; -1: from the cluster)")
    host, _, port = self.coordinator_address.rpartition(":")
    if self.coordinator_address and not (host and port.isdigit()):
      raise ConfigError("coordinator_address", f"{self.coordinator_address!r} is not host:port "
                        "(process 0's address and a free port, e.g. 10.0.0.1:8476)")
    if (self.num_processes or self.process_id >= 0) and not self.coordinator_address:
      raise ConfigError("coordinator_address", "--num_processes and --process_id need the "
                        "coordinator's host:port")
    if self.backend == "local" and self.ray_address:
      raise ConfigError("ray_address", "is for --backend=ray")
    self.network.recipe()
    self.supernet.recipe()

  @property
  def data(self) -> DataSpec:
    return DataSpec(path=self.cifar_path, train_images=self.train_images,
                    valid_images=self.valid_images, test_images=self.test_images)
