#!/usr/bin/env bash
# Runs a command as a multi-process JAX job on this machine: N processes on 127.0.0.1.
#
#   launch/local.sh [-n PROCESSES] [-d CPU_DEVICES_PER_PROCESS] [-p PORT] -- COMMAND...
#   launch/local.sh -n 2 -d 2 -- python -m i2i_jax.main --config=configs/pix2pix_synthetic.py \
#       --workdir=/tmp/two_processes
#
# Each process runs COMMAND with --coordinator_address=127.0.0.1:PORT --num_processes=N
# --process_id=I appended, and JAX_NUM_CPU_DEVICES=D in its environment (it only matters on
# CPU). Output lines are prefixed with [I]. When a process fails, the others are stopped and
# the launcher exits with the failed process's status. A TERM signal or Ctrl-C is passed on to
# every process (i2i_jax then saves a checkpoint and stops) and waited for. The launcher exits
# with the job's status: 0 when it finished, 75 when it saved a checkpoint and stopped early
# (rerun to resume), else the first failure's.
set -euo pipefail

processes=2
devices=1
port=""
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "n:d:p:h" option; do
  case "$option" in
    n) processes="$OPTARG" ;;
    d) devices="$OPTARG" ;;
    p) port="$OPTARG" ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then
  echo "launch/local.sh: no command given" >&2
  usage 2
fi
for value in "$processes" "$devices"; do
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/local.sh: -n and -d take positive integers, got '$value'" >&2
    exit 2
  fi
done
if [[ -z "$port" ]]; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

# i2i_jax's status for "saved a checkpoint and stopped early": not a failure.
preempted=75
pids=()
statuses=()  # Each process's exit status, once it has ended.
stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
# Waits for every process that has not ended, then exits with the job's status: the first
# process's (by index) that failed, else 75 if one stopped early, else 0.
finish() {
  local i status job_status=0
  for i in "${!pids[@]}"; do
    if [[ -z "${statuses[$i]:-}" ]]; then
      status=0
      wait "${pids[$i]}" || status=$?
      statuses[i]="$status"
    fi
  done
  for status in "${statuses[@]}"; do
    if ((status != 0 && status != preempted)); then
      exit "$status"
    fi
    ((status == preempted)) && job_status="$preempted"
  done
  exit "$job_status"
}
# A TERM (preemption) goes on to every process, which saves a checkpoint and stops; the
# launcher waits for them and exits with their status. Ctrl-C stops them too; it exits 130.
trap 'stop_all; finish' TERM
trap 'stop_all; wait "${pids[@]}" 2>/dev/null; exit 130' INT

for ((index = 0; index < processes; index++)); do
  JAX_NUM_CPU_DEVICES="$devices" "$@" --coordinator_address="127.0.0.1:$port" \
    --num_processes="$processes" --process_id="$index" \
    > >(sed -u "s/^/[$index] /") 2>&1 &
  pids+=("$!")
done

# Polls every 0.1 s rather than using `wait -n -p`, which needs bash >= 5.1 (macOS ships 3.2).
# `wait PID` on a process that has ended returns its status.
running=("${!pids[@]}")
while ((${#running[@]})); do
  for i in "${!running[@]}"; do
    index="${running[$i]}"
    kill -0 "${pids[$index]}" 2>/dev/null && continue
    status=0
    wait "${pids[$index]}" || status=$?
    statuses[index]="$status"
    unset "running[$i]"
    if ((status != 0 && status != preempted)); then
      how="status $status"
      ((status > 128)) && how="signal $((status - 128)) ($(kill -l $((status - 128))))"
      echo "launch/local.sh: process $index ended by $how; stopping the others" >&2
      stop_all
      wait "${pids[@]}" 2>/dev/null || true
      exit "$status"
    fi
  done
  if ((${#running[@]})); then
    sleep 0.1
  fi
done
finish
