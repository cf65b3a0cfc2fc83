#!/usr/bin/env bash
# The engine tables of BENCHMARKS.md on your own machine, in one command:
#   bash benchmarks/run_all.sh cuda [OUT_DIR]     # fp16, SDPA and flash, base + large, memory, RTFx
#   bash benchmarks/run_all.sh cpu  [OUT_DIR]     # fp32 base + large, reduced bf16
# Needs only torch, transformers, numpy and safetensors (no server packages).
# The service benchmark (needs the server's packages): python benchmarks/bench_service.py
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
OUT=${2:-bench-results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
run() {  # name, then bench_engine.py flags
  local name=$1
  shift
  echo "== $name" >&2
  "$PY" benchmarks/bench_engine.py --device "$DEVICE" --out "$OUT/$name.json" "$@" ||
    echo "$name failed (see above)" >&2
}
if [ "$DEVICE" = cuda ]; then
  run base_fp16_sdpa --config base --dtype float16 --attention sdpa --repeats 20 --memory
  run base_fp16_flash --config base --dtype float16 --attention flash --repeats 20
  run large_fp16_sdpa --config large --dtype float16 --attention sdpa --repeats 20 --memory
  run base_bf16_sdpa --config base --dtype bfloat16 --attention sdpa --repeats 20
  run base_fp32_sdpa --config base --dtype float32 --attention sdpa --repeats 10
  for config in base large; do  # RTFx, the Open ASR Leaderboard's method (bench_rtfx.py)
    echo "== rtfx_$config" >&2
    "$PY" benchmarks/bench_rtfx.py --device cuda --config "$config" --out "$OUT/rtfx_$config.json" ||
      echo "rtfx_$config failed (see above)" >&2
  done
else
  run base_fp32 --config base --dtype float32 --repeats 5 --memory
  run large_fp32 --config large --dtype float32 --cases single_10s --repeats 3 --memory
  run base_bf16 --config base --dtype bfloat16 --cases single_10s --repeats 2
fi
cat "$OUT"/*.md > "$OUT/ALL.md"
echo "wrote $OUT/ALL.md" >&2
