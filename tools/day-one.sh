#!/usr/bin/env bash
# Day one, as a new user meets gpubench: a fresh clone, a fresh virtual environment, the
# README's install lines, then docs/ci.md's gate on the `cpu` profile with a baseline of the
# user's own (the committed baselines/cpu judge only the machine kind they were recorded on):
#
#   1. pytest suites/ --gpu-profile cpu --gpubench-save-baseline   the first run after install
#   2. pytest suites/ --gpu-profile cpu --gpubench-save-baseline   main again: must flag nothing
#   3. a planted slowdown (every training step of the built-in GPT sleeps 0.6 s), then
#      pytest suites/test_cpu_smoke.py -k precision --gpu-profile cpu   a PR: must turn red
#      (the smoke suite's four precision cells: each regressed case runs twice more, to confirm)
#
# and prints each run's exit status, time and summary. Exits 0 when run 2 passed with no
# regression and run 3 failed on tokens/s regressions; 1 otherwise.
#
#   bash tools/day-one.sh [WORK]      WORK: an empty folder (default: a new one under /tmp)
#
# DeepSpeed's ops build into WORK (TORCH_EXTENSIONS_DIR), so run 1 is cold as on a new machine.
# About 20 minutes on 2 cores. docs/ci.md has the figures of its last run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/gpubench-day-one.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
if [ -e "$work/clone" ]; then
  echo "day-one: $work/clone exists; give an empty folder" >&2
  exit 2
fi
echo "day-one: working in $work"

git clone -q "$repo" "$work/clone"
cd "$work/clone"
echo "day-one: clone of $(git log -1 --format='%h %s' | cut -c1-100)"
export TORCH_EXTENSIONS_DIR="$work/torch_extensions"
baselines="$work/baselines"

# README.md, "Install and run": the same lines (tests/test_docs.py holds that they are)
started=$SECONDS
# shellcheck disable=SC1091
python3 -m venv .venv && . .venv/bin/activate
python -m pip install 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu
python -m pip install -e '.[test,hf,deepspeed]'
echo "day-one: installed in $((SECONDS - started)) s: $(python -c 'import torch, deepspeed; print("torch", torch.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null | tail -n 1)"

run() {  # run NAME ARGS...: pytest ARGS, its output in WORK/NAME.log; sets rc and summary
  local name=$1
  shift
  local t0=$SECONDS
  set +e
  COLUMNS=120 pytest "$@" --gpubench-baseline-dir "$baselines" >"$work/$name.log" 2>&1
  rc=$?
  set -e
  summary="$(readlink -f reports/latest)/summary.md"
  echo
  echo "day-one: $name: exit $rc in $((SECONDS - t0)) s: $(tail -n 1 "$work/$name.log")"
  echo "day-one: $name: $summary"
  sed -n '1,40p' "$summary"
  cp "$summary" "$work/$name-summary.md"
}

run 1-first suites/ --gpu-profile cpu --gpubench-save-baseline
first_rc=$rc
run 2-again suites/ --gpu-profile cpu --gpubench-save-baseline
again_rc=$rc

# The planted slowdown: a change to the model's code that makes every step 0.6 s longer (a
# step of the smoke cases takes 0.1 to 0.3 s here: 3 to 7 times slower).
python - <<'EOF'
import pathlib, re
path = pathlib.Path("gpubench/worker/models/gpt.py")
text = path.read_text()
planted = "        time.sleep(0.6)  # planted by tools/day-one.sh\n"
text = re.sub(r"(    def forward\(self, idx: torch\.Tensor\) -> torch\.Tensor:\n)", r"\1" + planted, text)
text = text.replace("from __future__ import annotations\n", "from __future__ import annotations\n\nimport time\n", 1)
path.write_text(text)
EOF
git diff --stat
run 3-slowed suites/test_cpu_smoke.py -k precision --gpu-profile cpu
slowed_rc=$rc
git checkout -q gpubench/worker/models/gpt.py

echo
echo "day-one: run 1 (first after install) exit $first_rc, run 2 exit $again_rc, run 3 (planted slowdown) exit $slowed_rc"
counts() {  # the summary's counts line, e.g. "2 regression, 8 unchanged"
  sed -n 3p "$work/$1-summary.md"
}
echo "day-one: run 2's gate: $(counts 2-again); run 3's gate: $(counts 3-slowed)"
ok=1
if [ "$again_rc" -ne 0 ] || counts 2-again | grep -q 'regression'; then
  echo "day-one: FAILED: the second run on a healthy build was not green" >&2
  ok=0
fi
if [ "$slowed_rc" -ne 1 ] || ! grep -q '^| .*tokens_per_s.*regression' "$work/3-slowed-summary.md"; then
  echo "day-one: FAILED: the planted slowdown did not fail the gate on tokens/s" >&2
  ok=0
fi
[ "$ok" -eq 1 ] && echo "day-one: as expected: green on a healthy build, red on the slowdown"
[ "$ok" -eq 1 ]
