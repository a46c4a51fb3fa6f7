# Shared by the sweep scripts (sourced, not run): resumable runs of main.py.
#
#   run_one DIR ARG...   one run of "$PYTHON main.py ARG..." whose output_dir is DIR:
#                        skipped when DIR holds results.json (finished), resumed when it
#                        holds checkpoint_last.pt (interrupted: "resume DIR" is appended),
#                        started otherwise. A failing run is reported and recorded; the
#                        sweep goes on.
#   check_configs NAME...  exit 2 unless configs/peft/NAME.yaml exists for every NAME.
#   finish_sweep         one summary line; exit status 1 if any run failed.
#
# Ctrl-C stops the whole sweep (the run in progress is resumed next time).

PYTHON=${PYTHON:-python}
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
  "$PYTHON" main.py "${args[@]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED $dir (exit $rc)" >&2
    SWEEP_FAILED+=("$dir")
  else
    SWEEP_DONE=$((SWEEP_DONE + 1))
  fi
}

check_configs() {
  local name
  for name in "$@"; do
    if [ ! -f "configs/peft/$name.yaml" ]; then
      echo "unknown setting '$name': no configs/peft/$name.yaml" >&2
      exit 2
    fi
  done
}

finish_sweep() {
  echo "sweep done: $SWEEP_DONE ran, $SWEEP_SKIPPED skipped (already finished), ${#SWEEP_FAILED[@]} failed"
  if [ "${#SWEEP_FAILED[@]}" -gt 0 ]; then
    printf 'failed: %s\n' "${SWEEP_FAILED[@]}" >&2
    exit 1
  fi
}
