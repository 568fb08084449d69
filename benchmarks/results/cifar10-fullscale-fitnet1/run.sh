#!/usr/bin/env bash
# One seed of FitNet 1 at full scale from the fast teacher: back-propagation, KD, hints + KD
set -u
cd /work/main
export FITNETS_DATA=/work/shared/datasets
R=recipes/cifar10-fitnet1-fast.yaml
COMMON="teacher.weights=runs/c10-fast train.epochs=10 hints.stage.epochs=3 kd.lambda_saturate=10"
for m in backprop kd fitnet; do
  echo "== $m $(date +%T)"
  .venv/bin/fitnets distill $R $COMMON method=$m out=runs/full-f1-$m-s0 2>&1 | grep -v "it/s\|img/s\]" | tr '\r' '\n' | grep -v "^\s*$" | grep -v "decoding"
  echo "== $m exit ${PIPESTATUS[0]} $(date +%T)"
done
