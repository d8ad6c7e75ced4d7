#!/usr/bin/env bash
# One GPU-tool call of the issue-8 training, from the repository root on the GPU machine (README.md
# gives the sequence). Everything that must come back is written under $OUT, at most 8 files of
# < 16 MiB, the whole output in $OUT/session.log.
#
#   bash scripts/gpu/train/session.sh smoke                 # ~1.5 min: every path on a toy run (train, cold export,
#                                                           #   cold resume, export.py --resume-from, hf_parity)
#   bash scripts/gpu/train/session.sh start MIN [ARGS]      # smoke, then train from scratch for MIN minutes (<= 7;
#                                                           #   <= 8.5 with SKV_NO_SMOKE=1, once smoke passed at this commit)
#   bash scripts/gpu/train/session.sh train MIN [ARGS]      # go on for MIN minutes (<= 8.5): runs/skv-small/state.pt
#                                                           #   (warm machine) or else the carried ckpt/ (cold)
#   bash scripts/gpu/train/session.sh export [SAMPLES] [EVAL_MIN]   # models/skv-small + accuracy + parity JSONs
#
# start/train: $OUT/ckpt/ = the cold-restart checkpoint (4 fp32 shards, state.json, log.jsonl) + session.log.
# export: $OUT/models/skv-small/model-0000{1,2}-of-00002.safetensors, $OUT/models/parity-mha/model.safetensors,
#         $OUT/small.tar.gz (index, configs, eval.json, card, parity JSONs, training log; repo-relative
#         paths: `tar xzf small.tar.gz -C <repo>`), session.log.
# ARGS go to train.py (keep the same ones on every call: the geometry and the curriculum).
set -uo pipefail
: "${OUT:?OUT is unset: run this through the GPU tool}"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../../.."
RUN=runs/skv-small
CKPT=ckpt
MODEL=models/skv-small
MHA=models/parity-mha
T=scripts/gpu/train

versions() {
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
  python3 -c 'import torch, transformers, safetensors; print("torch", torch.__version__, "transformers", transformers.__version__, "safetensors", safetensors.__version__, "cuda", torch.cuda.is_available())'
}

smoke() {
  # A toy curriculum through every path the real calls take; nothing of it is kept.
  local d=/tmp/skv-smoke
  rm -rf "$d"
  local toy=(--curriculum 512:6,1024:6 --tokens-per-batch 8192 --warmup 2 --workers 2)
  python3 $T/train.py --run $d/a --minutes 1 "${toy[@]}" --curriculum 512:6,1024:2 --export-state $d/ckpt || return 1
  python3 $T/train.py --run $d/b --minutes 1 "${toy[@]}" --resume-from $d/ckpt --rewarmup 2 --export-state $d/ckpt2 || return 1
  python3 $T/export.py --resume-from $d/ckpt2 --out $d/model --lengths 1024 --samples 2 --batch 2 || return 1
  python3 scripts/gpu/hf_parity.py --model $d/model --out $d/parity.json --lengths 300 --new 4 || return 1
  python3 scripts/gpu/hf_parity.py --write-random $d/mha || return 1
  ls -l $d/ckpt2 $d/model $d/mha
  echo "smoke: ok (${SECONDS} s)"
}

check_out() {
  local n
  n=$(find "$OUT" -type f | wc -l)
  find "$OUT" -type f -printf '%10s %P\n' | sort -k2
  [ "$n" -le 8 ] || echo "WARNING: $n files under \$OUT, the tool returns 8"
  find "$OUT" -type f -size +16383k -printf 'WARNING: %P is over 16 MiB\n'
}

train() {
  local fresh=$1 min=$2
  shift 2
  if [ "$fresh" = 1 ]; then
    if [ "${SKV_NO_SMOKE:-0}" = 1 ]; then echo 'start: smoke test skipped (SKV_NO_SMOKE=1)'
    else smoke || { echo 'smoke failed: nothing trained'; return 1; }; fi
    rm -rf "$RUN"
    echo "start: from scratch, $min minutes"
    python3 $T/train.py --run $RUN --minutes "$min" --export-state "$OUT/ckpt" "$@"
  else
    if [ -f $RUN/state.pt ]; then
      echo "train: warm machine, resuming from $RUN/state.pt (weights + AdamW)"
    elif [ -f $CKPT/state.json ]; then
      echo "train: cold machine, resuming from the carried $CKPT/ (weights only; AdamW re-warms)"
    else
      echo "train: neither $RUN/state.pt nor a carried $CKPT/state.json: refusing to start from scratch (use 'start')"
      return 1
    fi
    python3 $T/train.py --run $RUN --minutes "$min" --resume-from $CKPT --export-state "$OUT/ckpt" "$@"
  fi
}

export_all() {
  local samples=$1 evalmin=$2
  if [ ! -f $RUN/state.pt ] && [ ! -f $CKPT/state.json ]; then
    echo "export: neither $RUN/state.pt nor a carried $CKPT/state.json"
    return 1
  fi
  rm -rf $MODEL $MHA
  python3 $T/export.py --run $RUN --resume-from $CKPT --out $MODEL --samples "$samples" --eval-minutes "$evalmin"
  local rc=$?
  [ -f $MODEL/config.json ] || return 1  # no model written: nothing to check parity on
  python3 scripts/gpu/hf_parity.py --model $MODEL --out bench/results/parity-hf-small.json || rc=1
  python3 scripts/gpu/hf_parity.py --write-random $MHA || rc=1
  [ -d $MHA ] && { python3 scripts/gpu/hf_parity.py --model $MHA --out bench/results/parity-hf-mha.json || rc=1; }
  # The weights one file each; everything else in one archive with repo-relative paths.
  local small=() f
  for f in $MODEL/* $MHA/* bench/results/parity-hf-small.json bench/results/parity-hf-mha.json; do
    [ -f "$f" ] || continue
    case "$f" in
      *.safetensors) mkdir -p "$OUT/$(dirname "$f")" && cp "$f" "$OUT/$f" ;;
      *) small+=("$f") ;;
    esac
  done
  if [ -f $RUN/log.jsonl ]; then small+=($RUN/log.jsonl); elif [ -f $CKPT/log.jsonl ]; then small+=($CKPT/log.jsonl); fi
  tar czf "$OUT/small.tar.gz" "${small[@]}" && tar tzvf "$OUT/small.tar.gz"
  return $rc
}

main() {
  local mode=${1:-}
  shift || true
  echo "session.sh $mode $* ($(date -u +%FT%TZ))"
  versions
  case "$mode" in
    smoke) smoke ;;
    start|train)
      local min=${1:?minutes}
      shift
      local cap=8.5
      [ "$mode" = start ] && [ "${SKV_NO_SMOKE:-0}" != 1 ] && cap=7
      python3 -c "import sys; sys.exit(0 if 0 < float('$min') <= $cap else 1)" || { echo "$mode: minutes must be in (0, $cap] so the call ends inside 9.5 minutes"; return 2; }
      train "$([ "$mode" = start ] && echo 1 || echo 0)" "$min" "$@"
      ;;
    export) export_all "${1:-50}" "${2:-5.5}" ;;
    *) echo "usage: session.sh smoke | start MIN [ARGS] | train MIN [ARGS] | export [SAMPLES] [EVAL_MIN]"; return 2 ;;
  esac
  local rc=$?
  check_out
  echo "session.sh $mode: exit $rc after ${SECONDS} s"
  return $rc
}

mkdir -p "$OUT"
main "$@" 2>&1 | tee "$OUT/session.log"
