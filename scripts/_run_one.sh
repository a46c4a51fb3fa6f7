# Shared by the sweep scripts (sourced, not run): resumable runs of main.py.
#
#   run_one DIR ARG...   one run of "$PYTHON $REPO/main.py ARG..." whose output_dir is DIR:
#                        skipped when DIR holds results.json (finished), resumed when it
#                        holds checkpoint_last.pt (interrupted: "resume DIR" is appended),
#                        started otherwise. A failing run is reported and recorded; the
#                        sweep goes on.
#   resolve_configs      the sweep's configs, from SETTINGS (names of the paper's settings:
#                        configs/peft/NAME.yaml with the paper's "vpt_deep True") and
#                        CONFIGS (any config files, run as they say): fills SWEEP_NAMES
#                        (the file's name: the column in summarize.py), SWEEP_FILES and
#                        SWEEP_PEFT; exit 2 naming the first that does not exist.
#   finish_sweep         one summary line; exit status 1 if any run failed.
#
# The scripts do not change directory: relative paths (CONFIGS, OUT, DATA.DATAPATH)
# mean what they mean where the sweep is started, as for main.py itself.
# Ctrl-C stops the whole sweep (the run in progress is resumed next time).

PYTHON=${PYTHON:-python}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAIN="$REPO/main.py"
PAPER_SETTINGS="cifar10_N1 cifar10_N2 cifar10_N4 cifar100_N4 cifar100_N25 cifar100_N100 food101_N2 food101_N4 food101_N10"
if [ -n "${CONFIGS:-}" ]; then  # CONFIGS alone sweeps just those
  SETTINGS=${SETTINGS:-}
else
  SETTINGS=${SETTINGS:-$PAPER_SETTINGS}
fi
SWEEP_DONE=0
SWEEP_SKIPPED=0
SWEEP_FAILED=()
trap 'echo "sweep interrupted" >&2; exit 130' INT TERM

run_one() {
  local dir=$1
  shift
  local args=("$@")
  if [ -f "$dir/results.json" ]; then
    echo "skip   $dir (finished)"
    SWEEP_SKIPPED=$((SWEEP_SKIPPED + 1))
    return 0
  fi
  if [ -f "$dir/checkpoint_last.pt" ]; then
    echo "resume $dir"
    args+=(resume "$dir")
  else
    echo "start  $dir"
  fi
  local rc=0
  "$PYTHON" "$MAIN" "${args[@]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED $dir (exit $rc)" >&2
    SWEEP_FAILED+=("$dir")
  else
    SWEEP_DONE=$((SWEEP_DONE + 1))
  fi
}

resolve_configs() {
  SWEEP_NAMES=()
  SWEEP_FILES=()
  SWEEP_PEFT=()
  local name path
  for name in $SETTINGS; do
    path="$REPO/configs/peft/$name.yaml"
    if [ ! -f "$path" ]; then
      echo "unknown setting '$name': no configs/peft/$name.yaml (CONFIGS=FILE sweeps any config)" >&2
      exit 2
    fi
    SWEEP_NAMES+=("$name")
    SWEEP_FILES+=("$path")
    SWEEP_PEFT+=("vpt_deep True")
  done
  for path in ${CONFIGS:-}; do
    if [ ! -f "$path" ]; then
      echo "config not found: $path (CONFIGS paths are relative to $(pwd))" >&2
      exit 2
    fi
    name=$(basename "$path")
    name=${name%.yaml}
    SWEEP_NAMES+=("${name%.yml}")
    SWEEP_FILES+=("$path")
    SWEEP_PEFT+=("")
  done
}

finish_sweep() {
  echo "sweep done: $SWEEP_DONE ran, $SWEEP_SKIPPED skipped (already finished), ${#SWEEP_FAILED[@]} failed"
  if [ "${#SWEEP_FAILED[@]}" -gt 0 ]; then
    printf 'failed: %s\n' "${SWEEP_FAILED[@]}" >&2
    exit 1
  fi
}
