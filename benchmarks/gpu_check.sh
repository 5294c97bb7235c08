#!/usr/bin/env bash
# `make gpu-check`: on a CUDA machine, in one go: the CUDA tests, the GPU bench rows, then a profile of
# the encoder and the decoding step. Each part has its own time limit and its own log under $OUT, so a
# part that fails or runs long leaves the others' results. Uses the machine's python3 (GPU_PYTHON) as
# it is: no installs (a GPU machine may have no network); PYTHONPATH points at src/ and tests/.
#   OUT=dir BENCH_ARGS="--dtype bfloat16 --gpu-batches 8 32" bash benchmarks/gpu_check.sh
#   PARTS="env tests ending" bash benchmarks/gpu_check.sh    # some parts only (default: all)
# The "ending" part times a batch whose summaries end apart (--eos-bias: with random weights a document
# stops within a few tokens or runs to the maximum), with and without compacting the batch (one fixed
# batch: refill needs a queue of papers, see folder-ending).
# The "folder" parts run the whole path, end to end (issue 19): FOLDER_PAPERS (256) copies of the sample
# papers under new names, summarized with the bench's real-architecture checkpoint (built under
# $TMPDIR/arxsum-bench by the first part that needs it), in bf16, batches of FOLDER_BATCH (64), each
# summary 320 tokens as in the model-only rows:
#   folder          bench.py --folder: papers/s end to end beside the model-only 64-paper row, the model's
#                   wait for extraction, GPU peak memory (JSON in $OUT/folder.json)
#   folder-cli      the same folder through the `arxsum DIR --output-dir OUT` command itself: wall time,
#                   papers/s, and its closing "the model waited" line
#   folder-ending   the folder with summaries that end apart (--eos-bias 8.8): refill (RunConfig.refill, the
#                   default), then compaction only (bench --no-refill), papers/s end to end (JSON in
#                   $OUT/folder-ending-refill.json, $OUT/folder-ending-compaction.json)
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
FOLDER_PAPERS=${FOLDER_PAPERS:-256}
FOLDER_BATCH=${FOLDER_BATCH:-64}
# a smoke run of the folder parts on a CPU, at tiny size (the tests' tiny checkpoint, 4 tokens a summary):
#   PARTS=folder FOLDER_DEVICE=cpu FOLDER_DTYPE=float32 FOLDER_PAPERS=8 FOLDER_BATCH=2 FOLDER_LENGTH=4 \
#   FOLDER_BENCH_ARGS="--tiny --steps 4 --folder-only" FOLDER_CKPT=$TMPDIR/arxsum-bench/tiny-recipe1 ...
FOLDER_DEVICE=${FOLDER_DEVICE:-cuda}
FOLDER_DTYPE=${FOLDER_DTYPE:-bfloat16}
FOLDER_LENGTH=${FOLDER_LENGTH:-320}
FOLDER_BENCH_ARGS=${FOLDER_BENCH_ARGS:-}
PARTS=${PARTS:-env tests bench ending folder profile}
CACHE=${TMPDIR:-/tmp}/arxsum-bench
# the sample papers: SAMPLES, else a shared/ in the checkout (what travels to a device machine), else beside it
for d in "${SAMPLES:-}" shared/samples/papers ../shared/samples/papers /work/shared/samples/papers; do
    if [ -n "$d" ] && [ -d "$d" ]; then SAMPLES=$d; break; fi
done
SAMPLES=${SAMPLES:-shared/samples/papers}
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
    --cache-dir "$CACHE" --out "$OUT/bench.json" "${bench_args[@]}"
# shellcheck disable=SC2086  # ENDING_ARGS and PROFILE_ARGS are word lists on purpose
for compaction in "" --no-compaction; do
    part "ending${compaction:+-without}" ${ENDING_LIMIT:-150} $PY benchmarks/bench.py --device cuda --no-ref --paper none \
        --cache-dir "$CACHE" --out "$OUT/ending${compaction:+-without}.json" $ENDING_ARGS $compaction
done
part folder ${FOLDER_LIMIT:-300} $PY benchmarks/bench.py --device "$FOLDER_DEVICE" --no-ref --paper none \
    --dtype "$FOLDER_DTYPE" --gpu-batches "$FOLDER_BATCH" --only "$FOLDER_DTYPE ${FOLDER_BATCH}x" \
    --folder "$FOLDER_PAPERS" --folder-batch "$FOLDER_BATCH" $FOLDER_BENCH_ARGS \
    --samples "$SAMPLES" --cache-dir "$CACHE" --out "$OUT/folder.json"
FOLDER_CKPT=${FOLDER_CKPT:-$CACHE/real-recipe1}
export PY CACHE FOLDER_PAPERS FOLDER_BATCH SAMPLES OUT FOLDER_CKPT FOLDER_DEVICE FOLDER_DTYPE FOLDER_LENGTH
part folder-cli ${FOLDER_LIMIT:-300} bash -c '
    set -e
    ckpt=$FOLDER_CKPT
    if [ ! -f "$ckpt/config.json" ]; then  # the folder part builds it; alone, build it with a 1-paper row
        $PY benchmarks/bench.py --device cuda --no-ref --paper none --dtype bfloat16 --gpu-batches 1 \
            --tokens 256 --steps 2 --cache-dir "$CACHE" --out "$OUT/folder-cli-checkpoint.json" >/dev/null
    fi
    dir=$(mktemp -d); trap "rm -rf $dir" EXIT; mkdir "$dir/papers"
    pdfs=("$SAMPLES"/*.pdf); [ -e "${pdfs[0]}" ] || { echo "no sample papers in $SAMPLES (SAMPLES=DIR)"; exit 1; }
    for i in $(seq 0 $((FOLDER_PAPERS - 1))); do
        src=${pdfs[$((i % ${#pdfs[@]}))]}; cp "$src" "$dir/papers/paper-$(printf %04d "$i")-$(basename "$src")"
    done
    start=$(date +%s.%N)
    $PY -c "import sys; sys.argv[0] = \"arxsum\"; from arxsum.cli import main; main()" "$dir/papers" \
        --output-dir "$dir/out" -f json --model "$ckpt" --device "$FOLDER_DEVICE" \
        --dtype "$FOLDER_DTYPE" --batch-size "$FOLDER_BATCH" --min-length "$FOLDER_LENGTH" --max-length "$FOLDER_LENGTH" 2> "$dir/stderr" || true
    end=$(date +%s.%N)
    done=$(find "$dir/out" -name "*.json" 2>/dev/null | wc -l)
    tail -n 3 "$dir/stderr"
    grep "the model waited" "$dir/stderr" || echo "no wait line on stderr"
    awk -v n="$done" -v all="$FOLDER_PAPERS" -v s="$start" -v e="$end" "BEGIN { printf \"arxsum DIR --output-dir OUT: %d/%d papers in %.1f s: %.2f papers/s end to end (python + torch start and model load included)\n\", n, all, e - s, n / (e - s) }"
    [ "$done" -eq "$FOLDER_PAPERS" ]'
for variant in refill:"" compaction:--no-refill; do
    name=folder-ending-${variant%%:*}; flags=${variant#*:}
    part "$name" ${FOLDER_LIMIT:-300} $PY benchmarks/bench.py --device "$FOLDER_DEVICE" --no-ref --paper none \
        --dtype "$FOLDER_DTYPE" --folder "$FOLDER_PAPERS" --folder-batch "$FOLDER_BATCH" --folder-only \
        --eos-bias 8.8 $flags $FOLDER_BENCH_ARGS \
        --samples "$SAMPLES" --cache-dir "$CACHE" --out "$OUT/$name.json"
done
part profile ${PROFILE_LIMIT:-90} $PY benchmarks/profile_step.py --device cuda $PROFILE_ARGS
exit $status
