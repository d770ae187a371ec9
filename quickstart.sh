#!/usr/bin/env bash
# The README's quickstart: install, train a width-8 Cnn14 on the built-in synthetic data, explain its
# test predictions with the study's four methods and the two control maps (chance levels), with deletion and
# insertion curves and the randomisation sanity check, and build the report. No downloads; a few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv="$(bash .ci/install)"
"$venv/bin/python" main.py fit --config configs/quickstart.yaml
"$venv/bin/python" main.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/best.ckpt \
  --explain study,controls --explainer.sanity true
"$venv/bin/python" main.py report runs/quickstart --out runs/quickstart/report
echo "Open runs/quickstart/report/report.html to read the tables and listen to the interpretations."
