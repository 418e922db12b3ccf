#!/usr/bin/env bash
# One GPU check: the training-throughput table at 224 px (data alone, model step alone, the
# training step with the background batch pipeline; fails if a training step keeps less than
# 0.9 of the model-alone rate where the data alone is faster), a short resnet50-truncated run on
# a twin collection (`rig simulate`; the synthetic test set when the time budget does not allow
# it) with its catalog-protocol top-1 from `pipeline evaluate`, then torch.compile: the compiled
# model step against the eager one, and a short `pipeline train --compile`. Prints one table;
# exits 1 if any step failed, 0 otherwise.
#
# On the GPU machine (one GPU, Python 3.12 with CUDA torch, none of our other packages, no
# network), from a checkout:
#
#     bash benchmarks/gpu_check.sh                  # under 8 minutes (BUDGET_S, default 470)
#
# Our other dependencies travel with the checkout as wheels for that Python in .whl/ (e.g.
# `pip download --only-binary=:all: --python-version 3.12 -d .whl <pyproject's dependencies>`
# on a machine with network; leave torch and torchvision out: the machine's CUDA build must
# win). The script never installs from the network: it runs
#
#     python3 -m pip install --no-index --no-deps --target "$SITE" .whl/*.whl
#
# once (SITE defaults to $TMPDIR/coinrig-site) and then every command as
#
#     PYTHONPATH=CHECKOUT:$SITE python3 -m pipeline.cli train ...
#
# with the checkout itself importable (nothing is installed from it). Without a .whl/ folder the
# packages already importable are used (a development venv: PYTHON=.venv/bin/python).
#
#     bash benchmarks/gpu_check.sh --smoke          # the same steps on the CPU, small settings
#
# --smoke: tiny model at 32 px, the synthetic test dataset, torch.compile with dynamo disabled
# (TORCHDYNAMO_DISABLE=1: the flag's path without the compiler; the one training run takes
# --compile); about 45 s on two idle cores; tests/test_gpu_check.py runs it.
# Environment: PYTHON (python3), WHEELS (CHECKOUT/.whl), SITE, OUT (a new temporary folder;
# it keeps every log, the throughput JSON, the datasets and the runs), BUDGET_S.
set -uo pipefail

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --smoke or --help)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-$ROOT/.whl}"
SITE="${SITE:-${TMPDIR:-/tmp}/coinrig-site}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}"
mkdir -p "$OUT/logs"
if [ "$SMOKE" = 1 ]; then BUDGET_S="${BUDGET_S:-300}"; else BUDGET_S="${BUDGET_S:-470}"; fi
START=$SECONDS
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    export PYTHONPATH="$ROOT:$SITE"  # the checkout and the wheels, nothing else of ours
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export COINRIG_LOG="$OUT/logs/coinrig.log"
# smoke: torch.compile's path without the compiler (minutes on a CPU), one intra-op thread
# (a shared CPU: a second thread mostly waits for a core)
[ "$SMOKE" = 1 ] && export TORCHDYNAMO_DISABLE=1 OMP_NUM_THREADS=1
MODELS_224="resnet50,resnet50-truncated,convnext-tiny,resnet18"
export SMOKE ROOT PY WHEELS SITE OUT MODELS_224
cd "$ROOT" || exit 2

ROWS=()
FAILED=0

left() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME FIGURE-COMMAND -- COMMAND...: run COMMAND (log in $OUT/logs/NAME.log) within the
# time left; on success FIGURE-COMMAND (a shell function) prints the row's figure.
step() {
    local name="$1" figure="$2"
    shift 3
    local begun=$SECONDS budget status text
    budget=$(left)
    if [ "$budget" -le 5 ]; then
        ROWS+=("$name|FAIL|0|no time left in the ${BUDGET_S} s budget")
        FAILED=1
        return 1
    fi
    # the step's function runs in a child bash (export -f below), so timeout can stop it
    timeout "$budget" bash -c '"$@"' step "$@" >"$OUT/logs/$name.log" 2>&1
    status=$?
    if [ $status -eq 0 ]; then
        # a figure that fails (a goal missed) still says what it measured
        text="$($figure 2>>"$OUT/logs/$name.log")" && {
            ROWS+=("$name|ok|$((SECONDS - begun))|$text")
            return 0
        }
        text="${text:-$(tail -n 1 "$OUT/logs/$name.log" | cut -c1-100)}"
    elif [ $status -eq 124 ]; then
        text="timed out: $(tail -n 1 "$OUT/logs/$name.log" | cut -c1-100)"
    else
        text="exit $status: $(tail -n 1 "$OUT/logs/$name.log" | cut -c1-100)"
    fi
    ROWS+=("$name|FAIL|$((SECONDS - begun))|$text")
    FAILED=1
    return 1
}

skip() { ROWS+=("$1|skipped|0|$2"); }

# ---- the steps' commands and figures

# the wheels, if any (the device is checked by the throughput step, the first to import torch)
setup() {
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
    fi
}

setup_figure() {
    local wheels="no $WHEELS: the packages already importable"
    compgen -G "$WHEELS/*.whl" >/dev/null &&
        wheels="$(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
    echo "Python $("$PY" -c 'import sys; print(sys.version.split()[0])'), $wheels"
}

# throughput JSON [--compile]: the table at 224 px (smoke: one tiny model at 32 px)
throughput() {
    local json="$1"
    shift
    if [ "$SMOKE" = 1 ]; then
        "$PY" benchmarks/train_throughput.py --models resnet-tiny --sizes 32 --batch-size 8 \
            --steps 2 --warmup 1 --json "$json" "$@"
    elif [ $# -gt 0 ]; then  # compiled: the model of the training run
        "$PY" benchmarks/train_throughput.py --models resnet50-truncated --sizes 224 \
            --batch-size 128 --steps 20 --warmup 3 --json "$json" "$@"
    else
        "$PY" benchmarks/train_throughput.py --models "$MODELS_224" --sizes 224 \
            --batch-size 128 --steps 20 --warmup 3 --json "$json"
    fi
}

# The compiled model step against the same model's eager one (from the table).
compiled_figure() {
    "$PY" - "$OUT/throughput.json" "$OUT/compiled.json" <<'EOF'
import json, sys
eager = {r["model"]: r for r in json.load(open(sys.argv[1]))["rows"]}
for row in json.load(open(sys.argv[2]))["rows"]:
    base = eager.get(row["model"].removesuffix(" compiled"))
    speedup = f" = {row['model_step'] / base['model_step']:.2f}x eager" if base else ""
    print(
        f"{row['model']}: model step {row['model_step']:.0f} img/s{speedup}, "
        f"training step {row['train']:.0f} img/s = {row['train_over_model']:.2f}x model"
    )
EOF
}

# One figure per model, and the goal: a training step keeps 0.9 of the model-alone rate
# wherever the data alone is faster. Missing it fails the check on a GPU; on a shared CPU
# (--smoke) it is reported only.
throughput_figure() {
    "$PY" - "$OUT/throughput.json" "$SMOKE" <<'EOF'
import json, sys
table = json.load(open(sys.argv[1]))
rows, gpu = table["rows"], table["device"].startswith("cuda")
parts = [f"{r['model']} {r['train']:.0f} img/s = {r['train_over_model']:.2f}x model" for r in rows]
missed = [r["model"] for r in rows if r["data_over_model"] > 1 and r["train_over_model"] < 0.9]
print(
    f"{table['device_name']}: " + "; ".join(parts)
    + ("; goal missed: " + ", ".join(missed) if missed else "; goal met")
)
if sys.argv[2] == "0" and not gpu:
    sys.exit("no CUDA device: run with --smoke for the CPU")
sys.exit(1 if missed and sys.argv[2] == "0" else 0)
EOF
}

# dataset KIND COINS: a twin collection (`rig simulate`) or the synthetic test set
dataset() {
    echo "$1" >"$OUT/dataset-kind"
    if [ "$1" = twin ]; then
        "$PY" -c "from pipeline.rig_cli.app import app; app()" simulate --coins "$2" --types 6 \
            --seed 0 --image-size 256 --out "$OUT/data"
    else
        "$PY" -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
from synthetic_dataset import Spec, write_dataset
angles = (0.0, 180.0) if sys.argv[3] == '1' else Spec.angles
write_dataset(Path(sys.argv[1]), Spec(n_coins=int(sys.argv[2]), size=64, angles=angles))" \
            "$OUT/data" "$2" "$SMOKE"
    fi
}

dataset_figure() {
    echo "$(cat "$OUT/dataset-kind"), $(wc -l <"$OUT/data/metadata.jsonl") images"
}

train() {
    local out="$1"
    shift
    if [ "$SMOKE" = 1 ]; then
        "$PY" -m pipeline.cli train --data "$OUT/data" --out "$out" --cache-dir "$OUT/cache" \
            --model resnet-tiny --image-size 32 --embedding-dim 32 --batch-size 8 --epochs 2 \
            --steps-per-epoch 3 --rotations 1 --no-progress "$@"
    else
        "$PY" -m pipeline.cli train --data "$OUT/data" --out "$out" --cache-dir "$OUT/cache" \
            --model resnet50-truncated --image-size 128 --batch-size 64 --no-progress "$@"
    fi
}

train_figure() {
    "$PY" - "$1" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
epochs = [r for r in rows if r["kind"] == "epoch"]
train_s = sum(r["seconds"] for r in epochs)
val_s = sum(r.get("val_seconds", 0.0) for r in epochs)
best = json.loads((run / "summary.json").read_text())["best_val_top1"]
print(
    f"{epochs[-1]['step']} steps, last epoch {epochs[-1]['images_per_s']:.0f} img/s, "
    f"validation {100 * val_s / (train_s + val_s):.0f} % of the time, best val top-1 "
    + ("n/a" if best is None else f"{100 * best:.1f} %")
)
EOF
}

evaluate() {
    "$PY" -m pipeline.cli evaluate --run "$OUT/run" --cache-dir "$OUT/cache"
}

evaluate_figure() {
    "$PY" -c "
import json, sys
m = json.load(open(sys.argv[1]))
o = m['overall']
print(f\"catalog protocol top-1 {100 * o['top1']:.1f} %, top-5 {100 * o['top5']:.1f} % \"
      f\"({o['queries']} queries, {o['gallery']} gallery images, {m['coins']} test coins)\")" \
        "$OUT/run/eval-catalog/metrics.json"
}

# ---- the check

export -f setup throughput dataset train evaluate
if ! step setup setup_figure -- setup; then
    skip throughput "setup failed"
else
    step throughput throughput_figure -- throughput "$OUT/throughput.json"
    if [ "$SMOKE" = 1 ]; then
        step dataset dataset_figure -- dataset synthetic 6
    elif [ "$(left)" -ge 330 ]; then  # rendering 96 coins takes about a minute
        step dataset dataset_figure -- dataset twin 96
    else
        step dataset dataset_figure -- dataset synthetic 48
    fi
    if [ -f "$OUT/data/metadata.jsonl" ]; then
        if [ "$SMOKE" = 1 ]; then  # with --compile: the flag's path, dynamo disabled
            step train "train_figure $OUT/run" -- train "$OUT/run" --compile
        else
            step train "train_figure $OUT/run" -- train "$OUT/run" --epochs 6 --steps-per-epoch 100
        fi && step evaluate evaluate_figure -- evaluate
    fi
    # torch.compile last: compiling takes a minute or two on a GPU host
    if [ "$SMOKE" = 1 ] || [ "$(left)" -gt 150 ]; then
        step compile compiled_figure -- throughput "$OUT/compiled.json" --compile
    else
        skip compile "less than 150 s of the budget left"
    fi
    if [ ! -f "$OUT/data/metadata.jsonl" ]; then
        skip train-compile "no dataset"
    elif [ "$SMOKE" = 1 ]; then
        skip train-compile "smoke: the train step ran with --compile"
    elif [ "$(left)" -gt 120 ]; then
        step train-compile "train_figure $OUT/run-compiled" -- \
            train "$OUT/run-compiled" --compile --epochs 1 --steps-per-epoch 100
    else
        skip train-compile "less than 120 s of the budget left"
    fi
fi

echo
MODE="full"
[ "$SMOKE" = 1 ] && MODE="smoke, CPU"
echo "GPU check ($MODE), $((SECONDS - START)) s; logs in $OUT/logs"
printf '%-14s %-8s %8s  %s\n' step status seconds figure
for row in "${ROWS[@]}"; do
    IFS='|' read -r name status seconds text <<<"$row"
    printf '%-14s %-8s %8s  %s\n' "$name" "$status" "$seconds" "$text"
done
for log in throughput compile; do
    if [ -f "$OUT/logs/$log.log" ]; then
        echo
        grep -v '^W[0-9]' "$OUT/logs/$log.log" | tail -n 8
    fi
done
exit $FAILED
