#!/usr/bin/env bash
# One GPU lease, twelve lite trainings side by side on one GPU (issues 8 and 12); about 6 minutes.
#
#   group A (bundled-model candidates, seed 0, all training images but the 8 validation ones):
#     bundled        CDMA, labelled + unlabelled streams, batch 8+8
#     bundled_stain  the same with HED stain jitter 0.1 (AugmentConfig.stain_jitter)
#     full           supervised only, batch 8
#   group B (issue 12: 10 % labels, seeds 0 1 2; labelled set and validation drawn by the seed as in
#   benchmarks/glas_ssl.py), batch 4(+4):
#     sup10, cdma10 (the glas_ssl recipe), cdma10_release (TrainConfig.release)
#
# Each group runs one step count, chosen on the machine by benchmarks/gpu_train.py from the speed
# measured under the full load, so that training ends before T0 + TRAIN_S. Test images are not needed
# (nor sent): the checkpoints come back and are evaluated elsewhere.
#
# Prepare here (ignored folder .gpu_data/, never committed; GlaS is research-use only):
#   echo /.gpu_data/ >> .git/info/exclude
#   python benchmarks/pack_glas.py pack --src ../shared/data/glas --dst .gpu_data/glas
#   mkdir -p .gpu_data/code && git archive HEAD src_model | tar -x -C .gpu_data/code   # a frozen engine
# Run on the device machine (repo root, $OUT set, .gpu_data carried):
#   set -o pipefail; bash benchmarks/gpu_run.sh 390 2>&1 | tee $OUT/run.log
# (2026-11-29, one H200: training ended at +340 s; A rows 2300 steps, B rows 3000 steps)
# Comes back in $OUT: A.tar, B0.tar, B1.tar, B2.tar (weights-only checkpoints + records), logs.tgz.
# Then, on a CPU: benchmarks/eval_gpu_run.py (validation for A, test for the chosen A and for B),
# benchmarks/make_bundled.py (package the chosen A), benchmarks/glas_ssl_gpu_report.py (the issue-12 table).
set -u
T0=$(date +%s)
TRAIN_S=${1:-${TRAIN_S:-390}}
OUT=${OUT:-/tmp/gpu_run_out}
PY=${PY:-python3}
PATCH=${PATCH:-256}
BATCH_A=${BATCH_A:-8}
BATCH_B=${BATCH_B:-4}
WORKERS_A=${WORKERS_A:-2}
WORKERS_B=${WORKERS_B:-1}
CAL_FROM=${CAL_FROM:-25}
CAL_UNTIL=${CAL_UNTIL:-50}
WATCHDOG=${WATCHDOG:-$((TRAIN_S + 55))}
SEEDS=${SEEDS:-"0 1 2"}
DATA=${DATA:-/tmp/glas}
W=${W:-/tmp/gpu_work}
rm -rf "$W"; mkdir -p "$W/logs" "$W/ck" "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# the engine is not installed on the device: import it from the frozen snapshot when one was packed, else
# from this checkout
if [ -d .gpu_data/code/src_model ]; then CODE="$PWD/.gpu_data/code"; else CODE="$PWD"; fi
export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"

pack() {  # everything that should come back: at most 8 files, 16 MiB each
  (cd "$W/ck" && for g in *; do [ -d "$g" ] && tar cf "$OUT/$g.tar" "$g"; done)
  (cd "$W" && tar czf "$OUT/logs.tgz" logs sync $(ls ck/*/*.json 2>/dev/null))
  ls -la "$OUT"
}

{ date -u; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2; nvidia-smi;
  $PY -c "import sys, torch, numpy; print(sys.version); print('torch', torch.__version__, 'numpy', numpy.__version__)";
  cat .gpu_data/code/COMMIT 2>/dev/null; } > "$W/logs/env.txt" 2>&1 &

if [ ! -d "$DATA/images" ]; then
  $PY benchmarks/pack_glas.py unpack --src .gpu_data/glas --dst "$DATA" --workers 16 || exit 3
fi
echo "data ready at +$(( $(date +%s) - T0 ))s"

nvidia-smi dmon -s u -d 5 > "$W/logs/dmon.txt" 2>&1 &
MON1=$!
(while :; do echo "$(( $(date +%s) - T0 )) $(cat /proc/loadavg)"; sleep 10; done) > "$W/logs/load.txt" 2>&1 &
MON2=$!

PIDS=()
launch() {  # launch NAME GROUP GROUPSIZE COPYDIR args...
  local name=$1 group=$2 size=$3 copy=$4; shift 4
  $PY benchmarks/gpu_train.py --data "$DATA" --name "$name" --deadline $((T0 + TRAIN_S)) \
    --calibrate-from $((T0 + CAL_FROM)) --calibrate-until $((T0 + CAL_UNTIL)) --sync-dir "$W/sync/$group" \
    --group-size "$size" --ready-count "$NALL" --out "$W/runs/$name" --copy-to "$W/ck/$copy" --patch "$PATCH" "$@" \
    > "$W/logs/$name.log" 2>&1 &
  PIDS+=($!)
}
NB=$(( 3 * $(echo $SEEDS | wc -w) ))
NALL=$(( 3 + NB ))
for row in bundled bundled_stain full; do
  launch "$row" A 3 A --row "$row" --seed 0 --batch "$BATCH_A" --workers "$WORKERS_A"
done
for seed in $SEEDS; do
  for row in sup10 cdma10 cdma10_release; do
    launch "${row}_seed$seed" B "$NB" "B$seed" --row "$row" --seed "$seed" --batch "$BATCH_B" --workers "$WORKERS_B"
  done
done
echo "launched ${#PIDS[@]} trainings at +$(( $(date +%s) - T0 ))s; deadline +${TRAIN_S}s"

# background helpers write to files, not to this script's stdout: a pipe held open by a leftover
# `sleep` would keep `run ... | tee` waiting (it cost 100 s of device time once)
( sleep $(( T0 + WATCHDOG - $(date +%s) )); echo "watchdog: packing at +$(( $(date +%s) - T0 ))s"; pack ) \
  > "$W/logs/watchdog.txt" 2>&1 &
DOG=$!
fail=0
for p in "${PIDS[@]}"; do wait "$p" || fail=$((fail + 1)); done
for p in "$DOG" "$MON2"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
kill "$MON1" 2>/dev/null
echo "trainings done at +$(( $(date +%s) - T0 ))s, $fail failed"
for f in "$W"/logs/*.log; do echo "== $f"; grep -E "calibrated|done:|deadline|Error|error" "$f" | tail -4; done
pack
echo "end at +$(( $(date +%s) - T0 ))s"
