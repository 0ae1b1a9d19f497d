"""Energy: HLO kernels -> features -> per-kernel energy model; device specs.

Importing this package does not import JAX (``hlo`` imports it only when lowering a function).

Typical use::

  from cenas_jax import energy
  kernels = energy.extract_kernels(apply_fn, params, x, mode="gpu")
  model = energy.prior_model("jetson-tx2")
  energy_j = energy.predict_energy_j(model, kernels, batch_size=x.shape[0])

``mode="gpu"`` predicts the NVIDIA kernels on any host; the default ``mode="compiled"`` reads what
the backend at hand compiles, and prediction refuses those kernels when that backend is not a GPU.

Modules: ``hlo`` (entry points; ``hlo_cost`` kernel types and per-op cost, ``hlo_compiled`` the
compiled-HLO reader, ``hlo_gpu`` the gpu-mode fusion passes, ``hlo_ir`` the HLO reader), ``model``
(features, prediction, fits), ``specs``, ``meter`` (NVML), ``nb201_kernels`` (NB201 networks composed
per op), ``fitting`` / ``metrics`` (fits and scores for validation), ``validate`` (the NB201
protocol), ``kernel_bench`` / ``kernel_fit`` (kernel microbenchmarks and the fit on their dataset).
"""

from cenas_jax.energy.hlo import (
    KERNEL_CLASSES,
    GpuFusionConfig,
    Kernel,
    KernelGraph,
    KernelList,
    clear_cache,
    extract_kernel_graph,
    extract_kernels,
    kernel_graph_from_hlo,
    kernel_graph_from_module,
)
from cenas_jax.energy.model import (
    FEATURE_NAMES,
    SIGNATURE_LEVELS,
    ClassParams,
    EnergyModel,
    KernelCounts,
    KernelTable,
    count_kernels,
    fit_energy_model,
    fit_kernel_table,
    kernel_features,
    load_energy_model,
    predict_energy_j,
    predict_kernel_energy_j,
    predict_time_s,
    prior_model,
    save_energy_model,
    signature_key,
)
from cenas_jax.energy.specs import DEVICE_SPECS, DeviceSpec, get_spec

__all__ = [
    "KERNEL_CLASSES", "GpuFusionConfig", "Kernel", "KernelGraph", "KernelList", "clear_cache",
    "extract_kernel_graph", "extract_kernels", "kernel_graph_from_hlo", "kernel_graph_from_module",
    "FEATURE_NAMES", "SIGNATURE_LEVELS", "ClassParams", "EnergyModel", "KernelCounts", "KernelTable",
    "count_kernels", "fit_energy_model", "fit_kernel_table", "kernel_features", "load_energy_model",
    "predict_energy_j", "predict_kernel_energy_j", "predict_time_s", "prior_model",
    "save_energy_model", "signature_key", "DEVICE_SPECS", "DeviceSpec", "get_spec",
]
