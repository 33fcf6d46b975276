#!/usr/bin/env bash
# The wheels the offline GPU machine needs to run the validation kit (python3.12 there has
# torch, numpy, pandas, jinja2, matplotlib, scipy, pytest, pytest-benchmark, nvidia-ml-py):
# DeepSpeed and its pure-Python needs (../shared/tools/offline-wheels.sh), psutil, tokenizers
# and gpubench itself, built from this checkout. Run from the repository root:
#   bash tools/prepare-gpu-wheels.sh            # fills .whl/ (ignored by git)
# docs/validation/README.md has the command that installs them there and runs the kit.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.whl
grep -qxF "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude
mkdir -p "$dir"
rm -f "$dir"/gpubench-*.whl  # the kit must be this checkout's
bash ../shared/tools/offline-wheels.sh "$dir" > /dev/null
ls "$dir"/psutil-*.whl > /dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dir" psutil
# tokenizers (data="text" with tokenizer="bpe"): an abi3 wheel, installed without its
# huggingface-hub (only its hub downloads need that, and gpubench never downloads)
ls "$dir"/tokenizers-*.whl > /dev/null 2>&1 || python3 -m pip download -q --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir" 'tokenizers>=0.20'
python3 -m pip wheel -q --no-deps -w "$dir" .
ls -1 "$dir"
du -sh "$dir"
