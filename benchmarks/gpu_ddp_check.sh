# Device check of the NCCL / SyncBatchNorm path (see gpu_ddp_check.py); run from the repo root
# with the wheels of the packages the GPU image lacks in .whl/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT=${OUT:-/tmp/out}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'nccl', torch.cuda.nccl.version())"
rm -rf /tmp/syn /tmp/cache /tmp/single /tmp/ddp /tmp/nosync /tmp/amp /tmp/folds
python3 -m ml synth --out /tmp/syn --patients 24 --slices 6 --size 96 > /dev/null
# The backbone trains from epoch 2 on, so BatchNorm normalises batches; fp32, no augmentation
# and no dropout, so that the one-process run is the reference to rounding.
COMMON="--data /tmp/syn --preset test --quiet --device cuda --cache-dir /tmp/cache --set augment=none --set dropout=0.0 --set amp=false --set epochs=3 --set freeze_epochs=1 --set batch_size=16 --set hnm_epoch=0"
# CHECKS="single ddp" runs only those; all by default.
run() { local name=$1; shift; [[ -n "${CHECKS:-}" && " $CHECKS " != *" $name "* ]] && return; s=$SECONDS; "$@" > $OUT/$name.log 2>&1; echo "$name rc=$? wall $((SECONDS-s)) s"; tail -3 $OUT/$name.log; }
run single python3 -m ml train $COMMON --out /tmp/single
TR="python3 -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/gpu_ddp_check.py train"
export CHECK_BACKEND=gloo
run ddp $TR $COMMON --distributed data --out /tmp/ddp
CHECK_NO_SYNC_BN=1 run ddp_nosync $TR $COMMON --distributed data --out /tmp/nosync
run ddp_amp $TR ${COMMON/--set amp=false/--set amp=true} --distributed data --out /tmp/amp
unset CHECK_BACKEND
run folds $TR $COMMON --distributed folds --out /tmp/folds
python3 - <<'PY'
import csv
from pathlib import Path
def oof(path):
    p = Path(path) / "oof.csv"
    if not p.exists():
        return None
    with p.open() as h:
        return {r["path"] if "path" in r else r[next(iter(r))]: float(r["probability"]) for r in csv.DictReader(h)}
ref = oof("/tmp/single")
for name in ("ddp", "nosync", "amp", "folds"):
    other = oof(f"/tmp/{name}")
    if ref is None or other is None:
        print(name, "no oof.csv"); continue
    assert set(other) == set(ref), name
    print(f"{name}: largest |p - one process| = {max(abs(other[k] - ref[k]) for k in ref):.2e} over {len(ref)} slices")
PY
grep -h -i -E "error" $OUT/*.log | head -8
echo "DDP stride warnings: $(cat $OUT/*.log | grep -c "Grad strides do not match")"
