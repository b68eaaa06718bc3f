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
# every process (i2i_jax then saves a checkpoint and stops) and waited for.
set -euo pipefail

processes=2
devices=1
port=""
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
# A TERM (preemption) or Ctrl-C goes on to every process, which saves a checkpoint and stops;
# the launcher waits for them before it exits.
trap 'stop_all; wait "${pids[@]}" 2>/dev/null; exit 143' TERM
trap 'stop_all; wait "${pids[@]}" 2>/dev/null; exit 130' INT

for ((index = 0; index < processes; index++)); do
  JAX_NUM_CPU_DEVICES="$devices" "$@" --coordinator_address="127.0.0.1:$port" \
    --num_processes="$processes" --process_id="$index" \
    > >(sed -u "s/^/[$index] /") 2>&1 &
  pids+=("$!")
done

# Polls every 0.1 s rather than using `wait -n -p`, which needs bash >= 5.1 (macOS ships 3.2).
# `wait PID` on a process that has ended returns its status.
running=("${pids[@]}")
while ((${#running[@]})); do
  for i in "${!running[@]}"; do
    kill -0 "${running[$i]}" 2>/dev/null && continue
    status=0
    wait "${running[$i]}" || status=$?
    unset "running[$i]"
    if ((status != 0)); then
      how="status $status"
      ((status > 128)) && how="signal $((status - 128)) ($(kill -l $((status - 128))))"
      echo "launch/local.sh: process $i ended by $how; stopping the others" >&2
      stop_all
      wait "${pids[@]}" 2>/dev/null || true
      exit "$status"
    fi
  done
  if ((${#running[@]})); then
    sleep 0.1
  fi
done
