"""The settings of the HW-NAS-Bench CE-NAS experiment, as nested frozen dataclasses.

``ExperimentConfig`` nests the episode (``search.SearchConfig``, which nests the pool's
``PoolConfig``), the LaMOO proposals, the agent, its pre-training and the oracle. Every leaf field
name is unique across the nesting, so the flat flags of ``experiments/cli.py`` (and ``config.json``,
see ``to_json``) name them as before. Values are checked where they are defined and refused with
``ConfigError(field, message)``; the oracle's ``N_CLEAN:N_DIRTY`` splits are parsed here, once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing
from typing import Any, Literal

from cenas_jax.cluster import search as search_lib
from cenas_jax.cluster.pool import PoolConfig
from cenas_jax.cluster.search import SearchConfig
from cenas_jax.config_tree import flat_config
from cenas_jax.errors import ConfigError

STRATEGIES = ("vanilla", "oneshot", "heuristic", "cenas", "cenas_faithful", "oracle", "fixed",
              "online_threshold")
# The HV fraction whose carbon the oracle minimizes and the summary table reports.
REPORTED_TARGET = 0.98
TARGET_KEY = f"{REPORTED_TARGET:.2f}"


def _check_choices(config: Any) -> None:
  """Refuses a ``Literal[...]`` field whose value is not one of its choices."""
  for name, tp in typing.get_type_hints(type(config)).items():
    if typing.get_origin(tp) is Literal and getattr(config, name) not in typing.get_args(tp):
      raise ConfigError(name, f"must be one of {list(typing.get_args(tp))}, got "
                        f"{getattr(config, name)!r}")


def check_utc_time(name: str, value: str) -> dt.datetime:
  """``value`` as a time; refuses (naming flag ``name``) one that is not ISO 8601 with an offset."""
  try:
    when = dt.datetime.fromisoformat(value)
  except ValueError:
    raise ConfigError(name, f"{value!r} is not an ISO 8601 time, e.g. 2021-07-02T06:00:00+00:00") from None
  if when.tzinfo is None:
    raise ConfigError(name, f"{value!r} needs a UTC offset, e.g. 2021-07-02T06:00:00+00:00")
  return when


def check_trace_settings(config: Any) -> None:
  """The trace settings every search config has (``region``, ``trace_path``, ``start``): a region
  without a shared trace (unless a file is given) or a start without a UTC offset is refused."""
  from cenas_jax.data.carbon_traces import KNOWN_REGIONS  # pylint: disable=g-import-not-at-top

  if not config.trace_path and config.region not in KNOWN_REGIONS:
    raise ConfigError("region", f"{config.region!r} has no shared trace; choose one of "
                      f"{', '.join(KNOWN_REGIONS)}, or pass any trace file as --trace_path")
  check_utc_time("start", config.start)


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
  """LaMOO's proposals (``search_lib.LaMOOOptimizer``).

  Attributes:
    proposal: sampling inside the chosen region: uniform ("rejection") or GP expected HV improvement.
    cp: UCB exploration constant.
    lamoo_preset: tree rules (``LaMOOConfig.cenas`` or ``LaMOOConfig.lamoo``).
    max_tree_samples: cap on the samples a tree is built on (0: none).
  """

  proposal: Literal["rejection", "ehvi"] = "rejection"
  cp: float = 30.0
  lamoo_preset: Literal["cenas", "lamoo"] = "cenas"
  max_tree_samples: int = 400

  def __post_init__(self):
    _check_choices(self)

  def optimizer(self) -> search_lib.LaMOOOptimizer:
    from cenas_jax.moo.lamoo import LaMOOConfig

    preset = {"cenas": LaMOOConfig.cenas, "lamoo": LaMOOConfig.lamoo}[self.lamoo_preset]()
    return search_lib.LaMOOOptimizer(config=preset, cp=self.cp, method=self.proposal,
                                 max_tree_samples=self.max_tree_samples)


@dataclasses.dataclass(frozen=True)
class AgentSettings:
  """The agent of the ``cenas`` strategy (``cenas_faithful`` is always the official agent).

  Attributes:
    agent_mode: "repaired" (see ``allocation_agent``) or "faithful" (the official agent).
    agent_ci_input: the intensity features: the current value only ("actual", official), the true
      next 24 h ("perfect") or the trained forecaster's P50 ("forecast").
    agent_release: the repaired agent may release GPUs (0..n_gpus training).
    agent_entropy_weight: entropy bonus of the repaired agent (official: 0.5).
    agent_greedy: a pre-trained, frozen agent acts by its most probable action.
    agent_beta_scale: carbon weight of the repaired agent's reward (official: 2 / CI_max).
    agent_action: the repaired agent's action: "absolute" (0..n_gpus training GPUs) or "residual"
      (an adjustment of a rule by -3..3 GPUs; ``controller/allocation_agent.py``).
    agent_residual_base: the rule a residual action adjusts: "intensity" (the ``heuristic``
      strategy's) or "quantile" (the ``online_threshold`` strategy's, ``controller.types.QuantileRule``).
    agent_reward: the repaired agent's reward: "official", or "progress" (carbon priced against
      the hypervolume still to gain; ``controller/allocation_agent.py``).
    agent_carbon_price: the "progress" reward's price of one hour of the whole pool training at the
      trace's highest intensity, in e-folds of the remaining HV gap.
    agent_n_step: the repaired agent's critic target spans this many hours of rewards before it
      bootstraps (1: TD(0)); a training hour pays its carbon at once and its hypervolume hours later.
    forecaster_dir: a trained forecaster, for ``agent_ci_input="forecast"``.
  """

  agent_mode: Literal["repaired", "faithful"] = "repaired"
  agent_ci_input: Literal["actual", "perfect", "forecast"] = "perfect"
  agent_release: bool = True
  agent_entropy_weight: float = 0.5
  agent_greedy: bool = False
  agent_beta_scale: float = 2.0
  agent_action: Literal["absolute", "residual"] = "absolute"
  agent_residual_base: Literal["intensity", "quantile"] = "intensity"
  agent_reward: Literal["official", "progress"] = "official"
  agent_carbon_price: float = 0.2
  agent_n_step: int = 1
  forecaster_dir: str = ""

  def __post_init__(self):
    _check_choices(self)
    if self.agent_n_step < 1:
      raise ConfigError("agent_n_step", f"must be >= 1 (1: TD(0)), got {self.agent_n_step}")
    if self.agent_n_step > 1 and self.agent_mode == "faithful":
      raise ConfigError("agent_n_step", "the official agent's return is the hour's reward itself; "
                        "n-step returns need --agent_mode=repaired")
    if self.agent_ci_input == "forecast" and not self.forecaster_dir:
      raise ConfigError("forecaster_dir", "--agent_ci_input=forecast needs it: the 'forecaster' "
                        "folder of a finished `python -m experiments.train_forecaster` workdir")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Pre-training of the ``cenas`` agent over simulated episodes before it is deployed frozen.

  Attributes:
    pretrain_episodes: episodes (0: the agent learns online in the search window instead).
    pretrain_regions: regions whose traces the windows are drawn from.
    pretrain_end: the windows end before this UTC time (ISO 8601 with offset).
    pretrain_optimizer: proposals in pre-training episodes: "random" (fast; the agent learns the
      pool's dynamics only) or "lamoo" (the deployed search's own proposals and HV progress).
    pretrain_entropy_final: < 0: the entropy weight stays ``agent_entropy_weight``; else it falls
      linearly from it to this value over the episodes (a policy that settles instead of staying
      near uniform or collapsing early).
    pretrain_seed: seeds the draw of the windows and the agent's initial weights. The deployed
      agent is one draw of pre-training; rerunning with other seeds measures how much of a
      result is that draw.
    pretrain_draws: agents pre-trained, from seeds ``pretrain_seed`` on; with more than one, the
      one that reaches the HV target for the least carbon on validation windows of the
      pre-training period is deployed (model selection that never sees the search window).
    pretrain_validation_episodes: validation episodes per draw (random pre-training windows, the
      same for every draw).
  """

  pretrain_episodes: int = 0
  pretrain_regions: tuple[str, ...] = ("US-CAL-CISO", "DE", "US-MIDA-PJM")
  pretrain_end: str = "2021-06-25T00:00:00+00:00"
  pretrain_optimizer: Literal["random", "lamoo"] = "random"
  pretrain_entropy_final: float = -1.0
  pretrain_seed: int = 12345
  pretrain_draws: int = 1
  pretrain_validation_episodes: int = 9

  def __post_init__(self):
    _check_choices(self)
    if self.pretrain_episodes < 0:
      raise ConfigError("pretrain_episodes", f"must be >= 0, got {self.pretrain_episodes}")
    for name in ("pretrain_draws", "pretrain_validation_episodes"):
      if getattr(self, name) < 1:
        raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
    if self.pretrain_seed < 0:
      raise ConfigError("pretrain_seed", f"must be >= 0 (a numpy seed), got {self.pretrain_seed}")

  def check(self, used: bool) -> None:
    """Refuses a ``pretrain_end`` without a UTC offset and, when pre-training will run (``used``
    and episodes > 0), regions without a shared trace."""
    from cenas_jax.data.carbon_traces import KNOWN_REGIONS  # pylint: disable=g-import-not-at-top

    check_utc_time("pretrain_end", self.pretrain_end)
    unknown = [r for r in self.pretrain_regions if r not in KNOWN_REGIONS]
    if unknown and used and self.pretrain_episodes:
      raise ConfigError("pretrain_regions", f"unknown {unknown}; choose from {', '.join(KNOWN_REGIONS)}")


@dataclasses.dataclass(frozen=True)
class OracleSchedule:
  """A threshold schedule of the oracle: ``n_clean`` GPUs train in hours at or below the window's
  ``quantile`` of intensity, ``n_dirty`` otherwise (one GPU samples, the rest is released)."""

  quantile: float
  n_clean: int
  n_dirty: int

  @property
  def name(self) -> str:
    """The schedule's strategy and episode name, e.g. ``oracle_q0.35_2:0``."""
    return f"oracle_q{self.quantile:.2f}_{self.n_clean}:{self.n_dirty}"


@dataclasses.dataclass(frozen=True)
class OracleConfig:
  """The offline bound: per seed, the best of the threshold schedules, with the whole trace known.

  Attributes:
    oracle_quantiles: intensity quantiles of the window that separate clean from dirty hours.
    oracle_splits: training GPUs in clean:dirty hours, each ``N_CLEAN:N_DIRTY`` (e.g. ``2:0``).
    oracle_accounting: the accounting whose carbon to 0.98 of max HV the oracle minimizes.
    schedules: every (split, quantile) schedule, parsed from the two lists above.
  """

  oracle_quantiles: tuple[float, ...] = (0.35, 0.7)
  oracle_splits: tuple[str, ...] = ("1:0", "2:0", "2:1", "8:1")
  oracle_accounting: Literal["paper", "full"] = "full"
  schedules: tuple[OracleSchedule, ...] = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    _check_choices(self)
    splits = []
    for split in self.oracle_splits:
      parts = split.split(":")
      if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError("oracle_splits", f"{split!r} is not 'N_CLEAN:N_DIRTY' (e.g. 2:0)")
      splits.append((int(parts[0]), int(parts[1])))
    for q in self.oracle_quantiles:
      if not 0.0 <= q <= 1.0:
        raise ConfigError("oracle_quantiles", f"{q} is not a quantile in [0, 1]")
    object.__setattr__(self, "schedules", tuple(
        OracleSchedule(q, c, d) for c, d in splits for q in self.oracle_quantiles))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that defines an experiment (saved as ``config.json``; a resume must match it).

  Attributes:
    strategies: strategies to run (``STRATEGIES``).
    seeds: the episodes' seeds.
    region, trace_dataset, ci_column: the shared carbon-intensity trace; ``trace_path`` overrides
      them with any trace file the data layer reads.
    start: UTC start of the search window (ISO 8601 with offset).
    sampling: supernet table of the sampling GPUs' scores.
    train_time_model: NB201 training-time model.
    search: the episode and its pool.
    lamoo, agent, pretrain, oracle: see their classes.
    hv_targets: HV fractions for carbon-to-target.
    carbon_budgets_g: carbon budgets (g) for HV-at-budget.
    workers: episodes run in parallel processes (does not change results).
  """

  strategies: tuple[str, ...] = ("vanilla", "oneshot", "heuristic", "cenas", "oracle")
  seeds: tuple[int, ...] = tuple(range(20))
  region: str = "US-CAL-CISO"
  trace_dataset: Literal["forecasting", "benchmark", "electricitymaps"] = "forecasting"
  ci_column: Literal["lifecycle", "direct"] = "lifecycle"
  trace_path: str = ""
  start: str = "2021-07-02T06:00:00+00:00"
  sampling: Literal["oneshot", "fewshot"] = "oneshot"
  train_time_model: Literal["flops_affine", "constant"] = "flops_affine"
  search: SearchConfig = SearchConfig()
  lamoo: ProposalConfig = ProposalConfig()
  agent: AgentSettings = AgentSettings()
  pretrain: PretrainConfig = PretrainConfig()
  oracle: OracleConfig = OracleConfig()
  hv_targets: tuple[float, ...] = (0.95, 0.97, 0.98, 0.99)
  carbon_budgets_g: tuple[float, ...] = (5000.0, 10000.0, 30000.0, 50000.0)
  workers: int = 1

  def __post_init__(self):
    _check_choices(self)
    bad = [s for s in self.strategies if s not in STRATEGIES]
    if bad:
      raise ConfigError("strategies", f"unknown {bad}; choose from {list(STRATEGIES)}")
    if not self.seeds:
      raise ConfigError("seeds", "needs at least one seed")
    if len(set(self.seeds)) != len(self.seeds):
      raise ConfigError("seeds", f"{list(self.seeds)} repeats a seed")
    check_trace_settings(self)
    self.pretrain.check(used="cenas" in self.strategies)
    if self.workers < 1:
      raise ConfigError("workers", f"must be >= 1, got {self.workers}")
    if any(not 0 < t <= 1 for t in self.hv_targets) or REPORTED_TARGET not in self.hv_targets:
      raise ConfigError("hv_targets", f"{list(self.hv_targets)}: fractions in (0, 1] that include "
                        f"{REPORTED_TARGET} (the target the oracle and the summary table report)")

  @property
  def hours(self) -> int:
    return self.search.hours

  @property
  def pool(self) -> PoolConfig:
    return self.search.pool

  def to_json(self) -> dict:
    """The flat ``{flag name: value}`` form (what ``config.json`` and the provenance hold)."""
    return json.loads(json.dumps(flat_config(self)))
