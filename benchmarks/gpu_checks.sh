#!/usr/bin/env bash
# The GPU checks of a short device lease (the commands run on the GPU machine):
#
#   OUT=<folder> CENAS_SHARED_DATA=<data> STAGES="darts tabular" bash benchmarks/gpu_checks.sh
#   OUT=<folder> CENAS_SHARED_DATA=<data> STAGES="kernels nb201" bash benchmarks/gpu_checks.sh
#   OUT=<folder> CENAS_SHARED_DATA=<data> STAGES="nb201_batches" bash benchmarks/gpu_checks.sh
#   OUT=/tmp/x FAKE=1 bash benchmarks/gpu_checks.sh      # a CPU check of this script (fake meter)
#
# Stages (STAGES, in the order given; the environment is always printed first):
#   darts    the DARTS-V2 training step (C=36, 20 cells, batch 96) in $DARTS_DTYPES: images/s, J/step,
#            J/epoch, MFU. Compiling one dtype took about 6 minutes on an H200 (WORKSPACE section 10).
#   tabular  adult's tabular winners and random ResNet / FT-Transformer networks at batch 1 and 4096.
#   nb201    NB201 networks at batch 1 and 256 (XLA spends ~7 s per cell constant-folding at 256).
#   kernels  experiments.profile_kernels --preset=short with 1 s windows: the per-kernel dataset.
#   nb201_batches  up to $NB201_CELLS (60) distinct seeded NB201 cells, each at batch $NB201_BATCHES
#            (1,32,256) in turn, 0.5 s windows, until the stage's limit; nb201_batches/nb201_targets.csv
#            (time_b<B>_ms, energy_b<B>_j per cell, written even when the limit cuts the stage) is
#            what one model over the batches is fitted from:
#              python -m experiments.energy_model_nb201 --targets_csv=nb201_targets.csv \
#                --target_column=time_b1_ms@1,time_b32_ms@32,time_b256_ms@256 --device_spec=h200-sxm
# On an H200 NVML's energy counter changes about 10 times a second, so windows are >= 1 s. Each stage
# has its own time limit, so a failure or an overrun keeps the other stages' data. The results land in
# $OUT: gpu_checks.tar.gz (networks.jsonl, hlo/, kernels/) and gpu_checks.log. Nothing is installed:
# the repository root goes on PYTHONPATH and the machine's JAX is used.
set -u
OUT=${OUT:?set OUT to the output folder}
W=$(mktemp -d)
LOG="$OUT/gpu_checks.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
STAGES=${STAGES:-"darts tabular kernels nb201"} DARTS_DTYPES=${DARTS_DTYPES:-bfloat16}
if [ "${FAKE:-0}" = 1 ]; then
  net_flags=(--fake_meter --nb201_cells 0 --nb201_batch 8 --tabular_random 1 --tabular_batch 64
             --darts_channels 4 --darts_layers 3 --min_window_s 0.05 --idle_s 0.1)
  kernel_flags=(--preset=tiny --fake_meter --allow_fake --min_window_s=0.05 --idle_s=0.1)
  batch_flags=(--fake_meter --nb201_cells 2 --nb201_batches 1,8 --min_window_s 0.05 --idle_s 0.1)
  limits=(darts 300 tabular 300 nb201 300 kernels 60 nb201_batches 300)
else
  net_flags=(--nb201_cells 6 --min_window_s 1.0 --tabular_random 1 --idle_s 2)
  kernel_flags=(--preset=short --min_window_s=1.0 --repeats=2 --idle_s=3 --cooldown_s=0.05)
  batch_flags=(--nb201_cells "${NB201_CELLS:-60}" --nb201_batches "${NB201_BATCHES:-1,32,256}"
               --min_window_s 0.5 --idle_s 2)
  limits=(darts 480 tabular 150 nb201 240 kernels 240 nb201_batches 420)
fi
limit() { local i; for ((i = 0; i < ${#limits[@]}; i += 2)); do
  [ "${limits[i]}" = "$1" ] && echo "${limits[i+1]}"; done; }

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
  for part in $STAGES; do
    case $part in
      darts|tabular|nb201)
        stage "$part" "$(limit "$part")" python3 benchmarks/gpu_networks.py --out "$W/networks" \
          --parts "$part" --darts_dtypes "${DARTS_DTYPES// /,}" "${net_flags[@]}" ;;
      kernels)
        stage kernels "$(limit kernels)" python3 -m experiments.profile_kernels \
          --workdir="$W/kernels" "${kernel_flags[@]}" ;;
      nb201_batches)  # its own folder: the CSV holds this stage's cells only
        stage nb201_batches "$(limit nb201_batches)" python3 benchmarks/gpu_networks.py \
          --out "$W/nb201_batches" --parts nb201 "${batch_flags[@]}"
        python3 benchmarks/gpu_networks.py --out "$W/nb201_batches" \
          --csv_from "$W/nb201_batches/networks.jsonl" ;;
      *) echo "unknown stage $part (known: darts tabular nb201 kernels nb201_batches)" ;;
    esac
  done
  tar -czf "$OUT/gpu_checks.tar.gz" -C "$W" .
  ls -la "$OUT"
} 2>&1 | tee "$LOG"
