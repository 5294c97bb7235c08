#!/usr/bin/env bash
# `make gpu-check`: on a CUDA machine, in one go: the CUDA tests, the GPU bench rows, then a profile of
# the encoder and the decoding step. Each part has its own time limit and its own log under $OUT, so a
# part that fails or runs long leaves the others' results. Uses the machine's python3 (GPU_PYTHON) as
# it is: no installs (a GPU machine may have no network); PYTHONPATH points at src/ and tests/.
#   OUT=dir BENCH_ARGS="--dtype bfloat16 --gpu-batches 8 32" bash benchmarks/gpu_check.sh
#   PARTS="env tests ending" bash benchmarks/gpu_check.sh    # some parts only (default: all)
# The "ending" part times a batch whose summaries end apart (--eos-bias: with random weights a document
# stops within a few tokens or runs to the maximum), with and without compacting the batch.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results/gpu}
PY=${GPU_PYTHON:-python3}
if [ -n "${BENCH_ARGS:-}" ]; then read -r -a bench_args <<< "$BENCH_ARGS"; else
    # bf16 at 1/16/64/128 papers; float16 at 64; float32 (the default) at 16 and 64 (bf16 = fp32 tokens pairs them)
    bench_args=(--dtype bfloat16 float16 float32 --gpu-batches 1 16 64 128 --only bfloat16 "float16 64x" "float32 16x" "float32 64x")
fi
PROFILE_ARGS=${PROFILE_ARGS:---dtype bfloat16 --batch 32 --steps 32 --profile}
ENDING_ARGS=${ENDING_ARGS:---dtype bfloat16 --gpu-batches 64 --eos-bias 8.8}
PARTS=${PARTS:-env tests bench ending profile}
export PYTHONPATH=$PWD/src:$PWD/tests PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0
part() {  # part NAME SECONDS COMMAND...: run, log to $OUT/NAME.txt, remember a failure
    local name=$1 limit=$2; shift 2
    [[ " $PARTS " == *" ${name%%-*} "* ]] || return 0
    echo "== $name (limit ${limit} s): $*" >&2
    local start=$SECONDS
    timeout "$limit" "$@" > >(tee "$OUT/$name.txt") 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt" >&2
    [ $rc -eq 0 ] || status=1
}
part env 60 bash -c "nvidia-smi; $PY -c 'import torch, tokenizers; print(torch.__version__, tokenizers.__version__, torch.cuda.get_device_name())'"
part tests ${TESTS_LIMIT:-150} $PY -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -q -x
part bench ${BENCH_LIMIT:-270} $PY benchmarks/bench.py --device cuda --no-ref --paper none \
    --cache-dir "${TMPDIR:-/tmp}/arxsum-bench" --out "$OUT/bench.json" "${bench_args[@]}"
# shellcheck disable=SC2086  # ENDING_ARGS and PROFILE_ARGS are word lists on purpose
for compaction in "" --no-compaction; do
    part "ending${compaction:+-without}" ${ENDING_LIMIT:-150} $PY benchmarks/bench.py --device cuda --no-ref --paper none \
        --cache-dir "${TMPDIR:-/tmp}/arxsum-bench" --out "$OUT/ending${compaction:+-without}.json" $ENDING_ARGS $compaction
done
part profile ${PROFILE_LIMIT:-90} $PY benchmarks/profile_step.py --device cuda $PROFILE_ARGS
exit $status
