#!/usr/bin/env bash
# The GPU measurements behind the tables in benchmarks/README.md, in one go (about 6 minutes on an H200):
#   bash benchmarks/gpu_suite.sh OUTDIR
# CUDA tests, then benchmarks/train_step.py in every configuration (eager fp32/bf16, channels_last, block
# checkpointing, teacher bf16 + CUDA graph, whole-step CUDA graph, compile), restoration speed of the students
# against NAFNet-width32 (benchmarks/inference.py, exact and fast copies), the fast paths' distance from the
# reference path (esdnet_equality.py) and torch.profiler kernel tables (profile_step.py). Every part has its own
# time limit, so one failing or slow part does not cost the others. DEVICE=cpu TINY=1 runs the same steps with tiny
# networks on a CPU (a check of this script).
set -u
OUT=${1:?usage: gpu_suite.sh OUTDIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
if [ "${TINY:-0}" = 1 ]; then
    SIZES=2x32; SJ_SIZES=2x32; BIG=2x32; ITERS="--warmup 1 --iters 2"; SJ_ITERS="--warmup 1 --iters 1"
    EXTRA="--tiny"; EQ_SIZE=1x32; EQ_EXTRA="--tiny"
else
    SIZES=12x64,4x256; SJ_SIZES=12x64,4x256; BIG=4x256; ITERS="--warmup 3 --iters 10"; SJ_ITERS="--warmup 1 --iters 2"
    EXTRA=""; EQ_SIZE=2x256; EQ_EXTRA=""
fi
B="$PY benchmarks/train_step.py --device $DEVICE $EXTRA"
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log its status
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "== $name: exit $? after $((SECONDS - start))s"
}
{
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    $PY -c "import torch; from importlib.metadata import version; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'spikingjelly', version('spikingjelly'))"
    C="esdnet_fast,spikerir_tiny,spikerir_base,kd_tiny,kd_base"
    part eager 120 $B --cases $C --sizes $SIZES --dtypes fp32,bf16 $ITERS --out "$OUT/eager.jsonl"
    [ "$DEVICE" = cuda ] && part inference 40 $PY benchmarks/inference.py --device cuda --cases nafnet32,tiny,base,esdnet --modes exact,fast --sizes 256,512 --repeats 5 --profile= --out "$OUT/inference.jsonl"
    part reference 45 $B --cases esdnet_sj --sizes $SJ_SIZES --dtypes fp32 $SJ_ITERS --out "$OUT/reference.jsonl"
    part channels-last 70 $B --cases $C --sizes $SIZES --dtypes bf16 --channels-last $ITERS --out "$OUT/channels_last.jsonl"
    part checkpoint 40 $B --cases esdnet_fast --sizes $BIG --dtypes fp32,bf16 --channels-last --checkpoint $ITERS --out "$OUT/checkpoint.jsonl"
    [ "$DEVICE" = cuda ] && part teacher-fast 70 $B --cases spikerir_tiny,kd_tiny,spikerir_base,kd_base --sizes $SIZES --dtypes fp32,bf16 --teacher-bf16 --teacher-cuda-graph $ITERS --out "$OUT/teacher_fast.jsonl"
    [ "$DEVICE" = cuda ] && part cuda-tests 120 $PY -m pytest -q -rA -p no:cacheprovider --timeout=100 tests/models/test_cuda.py
    part equality 45 $PY benchmarks/esdnet_equality.py --device $DEVICE --size $EQ_SIZE $EQ_EXTRA
    part profile-esdnet 45 $PY benchmarks/profile_step.py --device $DEVICE --case esdnet_fast --size $BIG --dtype bf16 --channels-last $EXTRA --out "$OUT/profile_esdnet_fast_bf16_cl.txt"
    [ "$DEVICE" = cuda ] && part profile-kd 45 $PY benchmarks/profile_step.py --device $DEVICE --case kd_base --size $BIG --dtype bf16 --channels-last --teacher-cuda-graph $EXTRA --out "$OUT/profile_kd_base_bf16_cl.txt"
    [ "$DEVICE" = cuda ] && part step-cuda-graph 45 $B --cases esdnet_fast,spikerir_base,kd_base --sizes $BIG --dtypes bf16 --cuda-graph $ITERS --out "$OUT/cuda_graph.jsonl"
    part compile 60 $B --cases spikerir_base --sizes $BIG --dtypes bf16 --compile $ITERS --out "$OUT/compile.jsonl"
} 2>&1 | tee "$OUT/suite.log"
