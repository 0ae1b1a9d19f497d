#!/usr/bin/env bash
# The GPU checks of a short device lease, in one command (about 8 minutes on an H200):
#
#   OUT=<folder> CENAS_SHARED_DATA=<data> bash benchmarks/gpu_checks.sh
#   OUT=/tmp/x FAKE=1 bash benchmarks/gpu_checks.sh      # a CPU check of this script (fake meter)
#
# 1. environment: nvidia-smi, JAX's devices, the versions of the packages the code imports;
# 2. whole networks (benchmarks/gpu_networks.py): NB201 and adult's tabular networks at two batch
#    sizes, the DARTS-V2 training step in float32 and bfloat16, NVML energy and the compiled HLO;
# 3. kernels (experiments.profile_kernels --preset=short): the per-kernel NVML dataset that
#    experiments.fit_energy_model fits.
# Each stage has its own time limit, so a failure or an overrun keeps the other stages' data. The
# results land in $OUT: gpu_checks.tar.gz (networks.jsonl, hlo/, kernels/) and gpu_checks.log.
# Nothing is installed: the repository root goes on PYTHONPATH, the machine's JAX is used.
set -u
OUT=${OUT:?set OUT to the output folder}
W=$(mktemp -d)
LOG="$OUT/gpu_checks.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
NET_S=${NET_S:-270} KERNEL_S=${KERNEL_S:-190}
if [ "${FAKE:-0}" = 1 ]; then
  net_flags=(--fake_meter --nb201_cells 0 --nb201_batch 8 --tabular_random 1 --tabular_batch 64
             --darts_channels 4 --darts_layers 3 --min_window_s 0.05 --idle_s 0.1)
  kernel_flags=(--preset=tiny --fake_meter --allow_fake --min_window_s=0.05 --idle_s=0.1)
else
  net_flags=(--nb201_cells 6)
  kernel_flags=(--preset=short --min_window_s=0.5 --repeats=2 --idle_s=3 --cooldown_s=0.05)
fi

stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s) $(date -u +%T)"
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  echo "== $name rc=$? $(date -u +%T)"
}

{
  stage environment 60 bash -c '
    nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm,memory.total --format=csv
    python3 -c "import jax; print(\"jax\", jax.__version__, jax.default_backend(), jax.devices())"
    python3 -m pip list 2>/dev/null | grep -i -E "^(jax|jaxlib|flax|optax|chex|orbax|numpy|pandas|nvidia-ml-py|absl) "'
  stage networks "$NET_S" python3 benchmarks/gpu_networks.py --out "$W/networks" "${net_flags[@]}"
  stage kernels "$KERNEL_S" python3 -m experiments.profile_kernels --workdir="$W/kernels" \
    "${kernel_flags[@]}"
  tar -czf "$OUT/gpu_checks.tar.gz" -C "$W" .
  ls -la "$OUT"
} 2>&1 | tee "$LOG"
