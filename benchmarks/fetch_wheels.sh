#!/usr/bin/env bash
# Fetch, here, the wheels benchmarks/gpu_check.sh installs on a GPU machine that has no network: the
# project's dependencies that such a machine lacks, for CPython 3.12 on x86-64 manylinux, into .whl/
# (ignored by git). wandb is left out: the check runs with --trainer.logger false. Packages published
# as source only (lime) are built into wheels here.
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION]   # default 3.12
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
pyver="${1:-3.12}"
dest=.whl
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
  platforms+=(--platform "$p")
done
# the versions the project is tested with here (pip list of its venv), one of each
packages=(jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 soundfile==0.14.0 cffi==2.1.1
          pycparser==3.12 captum==0.9.0 shap==0.51.0 slicer==0.0.8 quantus==0.6.0 cachetools)
for pkg in "${packages[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$dest" "$pkg"
done
"$PY" -m pip wheel -q --no-deps -w "$dest" lime==0.2.0.1  # source only on the index
ls -la "$dest"
du -sh "$dest"
