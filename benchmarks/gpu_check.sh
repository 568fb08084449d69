#!/usr/bin/env bash
# The device check (issue 24): one script, about 6-8 minutes on one H200, one results file.
#
#   FITNETS_DATA=.data/cifar10-subset bash benchmarks/gpu_check.sh [RESULTS_FILE]
#
# Runs on a bare machine that has torch, numpy, PyYAML, tqdm, Pillow and safetensors (the
# project is installed with --no-deps; --ignore-requires-python since such machines may
# have another Python than the 3.11 the suite runs on). Each part has its own time limit and
# a failing part does not stop the others; the results file says what each printed and how
# it ended. Cut the CIFAR-10 subset the teacher part reads with
#   python tools/cifar_subset.py --out .data/cifar10-subset   (carry .data with it)
# DEVICE=cpu QUICK=1 runs the same parts briefly on a CPU (to try the script before a loan).
set -u
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
dest="${OUT:-benchmarks/results}"
mkdir -p "$dest"
results="${1:-$dest/gpu-check.md}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
steps=40; repeats=3; epochs=3; trials=3; fast=(train.epochs=2)
if [ "$QUICK" = 1 ]; then steps=2; repeats=1; epochs=1; trials=1
    fast=(train.epochs=1 data.train_limit=2000 data.test_limit=1000 data.batch_size=256
          train.optim.lr=0.375); fi

say() { printf '%s\n' "$@" | tee -a "$results"; }
part() {  # part TITLE SECONDS COMMAND...
    local title="$1" limit="$2"; shift 2
    local t0=$SECONDS rc
    say "" "## $title" "" "\`$*\` (limit ${limit}s)" "" '```'
    timeout "$limit" "$@" > "$work/part.log" 2>&1
    rc=$?
    # the last 40 lines, without progress bars (carriage returns, "NN%|" meters)
    tr '\r' '\n' < "$work/part.log" | grep -v -E '^\s*$|[0-9]+%\|' | tail -n 40 \
        | tee -a "$results"
    say '```' "" "exit $rc$([ $rc = 124 ] && echo ' (timed out)'), $((SECONDS - t0)) s"
}

: > "$results"
say "# Device check ($(date -u +%Y-%m-%dT%H:%MZ), DEVICE=$DEVICE, QUICK=$QUICK)"
part "machine" 60 python3 -c "import torch, platform; print(platform.platform(), 'python',
platform.python_version(), 'torch', torch.__version__); print(torch.cuda.get_device_name(0)
if torch.cuda.is_available() else 'no CUDA device')"
part "install (no deps)" 120 python3 -m pip install -q --no-deps --no-build-isolation \
    --ignore-requires-python -e .
for pair in mnist cifar10-fitnet1; do
    part "speed $pair, eager" 75 python3 benchmarks/speed.py --pair "$pair" --device "$DEVICE" \
        --steps "$steps" --repeats "$repeats"
    part "speed $pair, compiled with CUDA graphs (every step type)" 130 python3 \
        benchmarks/speed.py --pair "$pair" --device "$DEVICE" --steps "$steps" \
        --repeats "$repeats" --only stage1,stage2,backprop --set perf.compile=true
done
# the language model's loop against its eager floor (issue 33: >= 0.95x for both stages), the
# standard-library recipes' GPTs on synthetic blocks of 128 ids, batch 32 (steps / 2 batches)
part "lm speed, eager" 60 python3 benchmarks/lm_speed.py --device "$DEVICE" \
    --blocks "$((steps * 16))" --repeats "$repeats"
part "speed mnist, compiled without graphs" 110 python3 benchmarks/speed.py --pair mnist \
    --device "$DEVICE" --steps "$steps" --repeats "$repeats" --only stage1,stage2,backprop \
    --set perf.compile=true perf.cuda_graphs=false
part "stream cifar" 60 python3 benchmarks/stream.py cifar --steps "$((steps / 2 + 1))" \
    --repeats "$repeats"
part "CIFAR-10 teacher, $epochs epochs" 90 python3 -m fitnets train recipes/cifar10-teacher.yaml \
    "train.epochs=$epochs" train.patience=0 "device=$DEVICE" "out=$work/teacher"
# the fast teacher (issue 32): its step's img/s and share of the device's matmul rate, then
# 2 epochs of its recipe (batch 1024, test-time augmentation) on the subset's 15k/5k images
part "fast CIFAR-10 teacher, speed" 90 python3 benchmarks/fast_teacher.py --device "$DEVICE" \
    --steps "$((steps / 4 + 1))" --repeats "$repeats"
part "fast CIFAR-10 teacher, ${fast[0]#*=} epochs" 120 python3 -m fitnets train \
    recipes/cifar10-teacher-fast.yaml "${fast[@]}" "device=$DEVICE" "out=$work/fast-teacher"
# the teacher bank (issue 32): its build (img/s), a KD epoch of FitNet 1 reading it against
# the same epoch running the teacher inline and a back-propagation epoch (goal: bank >= 0.9x
# backprop), and how many runs repay the build; the fast teacher (its recipe's 2-pixel
# translations and alternating flips: 50 views), then the paper's maxout teacher (~20x
# FitNet 1's forward) on the same views
bank=(--images 8192 --repeats "$repeats"); maxout=(--images 2048 --repeats "$repeats")
if [ "$QUICK" = 1 ]; then bank=(--images 256 --pad 1 --repeats 1); maxout=("${bank[@]}"); fi
part "teacher bank, fast teacher -> FitNet 1" 75 python3 benchmarks/teacher_bank.py \
    --device "$DEVICE" "${bank[@]}"
part "teacher bank, maxout teacher -> FitNet 1" 75 python3 benchmarks/teacher_bank.py \
    --teacher cifar_teacher --device "$DEVICE" "${maxout[@]}"
part "kill and resume at random points ($trials trials)" 120 python3 tools/kill_resume.py \
    --trials "$trials" --device "$DEVICE"
part "CUDA-relevant tests" 150 python3 -m pytest -q -p no:cacheprovider \
    tests/data/test_device.py tests/test_host_sync.py tests/test_speed_perf.py \
    tests/test_cuda_graphs.py
cp benchmarks/results/SPEED.md benchmarks/results/speed-*.json \
    benchmarks/results/fast-teacher-*.json benchmarks/results/teacher-bank-*.json \
    benchmarks/results/lm-speed.md benchmarks/results/lm-speed-*.json "$dest/" \
    2>/dev/null || true
cp -r benchmarks/results/stream "$dest/" 2>/dev/null || true
say "" "done in ${SECONDS} s"
