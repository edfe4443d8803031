# Sourced by the prepared GPU scripts (scripts/gpu_speed*.sh) after they set OUT: the wheels in .whl/ (faiss,
# submitit, timm for that machine's Python) installed beside the machine's own packages, everything logged to
# $OUT/all.log, the machine described, and `step NAME LIMIT_S COMMAND...`, which runs a command under a time limit
# and prints its exit status and seconds.
mkdir -p "$OUT"; LOG=$OUT/all.log
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
exec > >(tee -a "$LOG") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
step() { local name=$1 t=$2; shift 2; echo "=== $name (limit ${t}s): $*"; local s=$SECONDS; timeout "$t" "$@"; echo "=== $name rc=$? in $((SECONDS-s))s"; }
export TORCHINDUCTOR_CACHE_DIR=$OUT/torch_compile
