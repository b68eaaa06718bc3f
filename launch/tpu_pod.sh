#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: one i2i_jax process per TPU host, joined by
# jax.distributed (which detects the slice by itself, hence --distributed=on).
#
#   launch/tpu_pod.sh create|install|run|delete|all [-- --config.x=y ...]
#
#   create   create the slice (SPOT=1 for a Spot slice)
#   install  copy this checkout's working tree to every host and pip install it with jax[tpu]:
#            uncommitted changes and untracked files included, .git and what git ignores
#            (.venv, build outputs) left out
#   run      start python -m i2i_jax.main on every host (extra args after --), detached from
#            ssh: the job goes on when the connection drops. Each host writes its output to
#            ~/i2i_jax_logs/RUN_NAME.log; run prints how to follow the log and stop the job
#   delete   delete the slice
#   all      create, install, run, wait for the job to end on every host, then delete (also
#            when a step before fails). Ctrl-C while it waits leaves the job and the slice up
#
# Settings (environment): TPU_NAME, ZONE, ACCELERATOR_TYPE (e.g. v5litepod-16, v4-32),
# RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite, tpu-ubuntu2204-base), PROJECT (optional),
# CONFIG (a config file of this checkout), WORKDIR (gs://bucket/path: every host writes its
# checkpoint shards there, so it must be shared). Rerunning `run` resumes from WORKDIR.
# RUN_NAME names the log (default TPU_NAME-UTC date and time). DRY_RUN=1 prints the gcloud
# commands (and the files install would deploy) instead of running them.
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 ]] || usage 2
action="$1"
shift
[[ "${1:-}" == "--" ]] && shift

TPU_NAME="${TPU_NAME:-i2i-jax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/pix2pix_facades.py}"
RUN_NAME="${RUN_NAME:-$TPU_NAME-$(date -u +%Y%m%d-%H%M%S)}"
POLL_SECONDS="${POLL_SECONDS:-60}"
REMOTE_DIR="i2i_jax"
LOG_DIR="i2i_jax_logs"
# The job's files on every host: .log (its output), .pid (python's pid), .status (its exit
# status, written when it ends). $HOME is expanded by the host's shell.
job_files="\$HOME/$LOG_DIR/$RUN_NAME"
checkout="$(cd "$(dirname "$0")/.." && pwd)"

# ARG...: the words as a shell reads them back, single-quoted where need be.
quoted() {
  local arg out=""
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  echo "${out# }"
}

gcloud_tpu() {
  local command=(gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"})
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "[dry run] $(quoted "${command[@]}")"
  else
    "${command[@]}"
  fi
}

on_all_hosts() {
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

# The gcloud command that runs COMMAND (which holds no single quote) on WORKER, for the user.
ssh_line() {
  printf "    gcloud compute tpus tpu-vm ssh %q --zone=%q%s --worker=%s --command='%s'\n" \
    "$TPU_NAME" "$ZONE" "${PROJECT:+ --project=$(printf '%q' "$PROJECT")}" "$1" "$2"
}

print_job_help() {
  echo "  follow process 0's log (the other hosts: --worker=1, 2, ...):"
  ssh_line 0 "tail -f $job_files.log"
  echo "  stop the job (every process saves a checkpoint and exits; run again to resume):"
  ssh_line all "kill -TERM \$(cat $job_files.pid)"
  echo "  each host's exit status, once the job has ended:"
  ssh_line all "cat $job_files.status"
}

create() {
  gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${SPOT:+--spot}
}

install() {
  local temporary list count commit changes
  temporary="$(mktemp -d)"
  list="$temporary/files"
  # The working tree as it is now: tracked files (less those deleted) and untracked ones that
  # git does not ignore.
  git -C "$checkout" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      if [[ -e "$checkout/$file" || -L "$checkout/$file" ]]; then
        printf '%s\0' "$file"
      fi
    done > "$list"
  count="$(tr -cd '\0' < "$list" | wc -c | tr -d ' ')"
  commit="$(git -C "$checkout" rev-parse --short HEAD 2>/dev/null || echo "no commit")"
  changes="$(git -C "$checkout" status --porcelain | wc -l | tr -d ' ')"
  echo "install: deploying the working tree of $checkout: $count files, commit $commit" \
    "plus $changes uncommitted change(s) (git status lists them); .git and files git" \
    "ignores are left out"
  if [[ -n "${DRY_RUN:-}" ]]; then
    tr '\0' '\n' < "$list" | sed 's/^/  /'
  else
    tar -czf "$temporary/i2i_jax.tar.gz" -C "$checkout" --null -T "$list"
  fi
  gcloud_tpu scp "$temporary/i2i_jax.tar.gz" "$TPU_NAME:~/i2i_jax.tar.gz" --worker=all
  on_all_hosts "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR \
    && tar -xzf ~/i2i_jax.tar.gz -C ~/$REMOTE_DIR \
    && python3 -m pip install -q -U 'jax[tpu]' -e ~/$REMOTE_DIR"
  rm -rf "$temporary"
}

run() {
  : "${WORKDIR:?set WORKDIR=gs://bucket/path, a directory every TPU host can write}"
  if ! [[ "$RUN_NAME" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "launch/tpu_pod.sh: RUN_NAME takes letters, digits, '.', '_' and '-', got '$RUN_NAME'" >&2
    exit 2
  fi
  local extra="" job
  if [[ $# -gt 0 ]]; then
    extra="$(printf ' %q' "$@")"
  fi
  # Run by bash on each host, in a session of its own (setsid) with SIGHUP ignored (nohup):
  # neither a dropped connection nor the end of the ssh command stops it.
  job="python3 -m i2i_jax.main --distributed=on --config=$(printf '%q' "$CONFIG") \
--workdir=$(printf '%q' "$WORKDIR")$extra & echo \$! > $job_files.pid; wait \$!; \
echo \$? > $job_files.status"
  # Each host starts the job, then waits (5 s at most) for its pid file: the job has started.
  on_all_hosts "mkdir -p ~/$LOG_DIR && cd ~/$REMOTE_DIR || exit 1; \
rm -f $job_files.pid $job_files.status; \
setsid nohup bash -c $(printf '%q' "$job") > $job_files.log 2>&1 < /dev/null & \
for i in \$(seq 50); do [ -s $job_files.pid ] && break; sleep 0.1; done; \
if [ -s $job_files.pid ]; then echo \"\$(hostname): started $RUN_NAME\"; \
else echo \"\$(hostname): $RUN_NAME did not start, see $job_files.log\" >&2; exit 1; fi"
  echo "run: started $RUN_NAME on every host of $TPU_NAME, detached; its output goes to" \
    "$job_files.log on each host"
  print_job_help
}

# Polls every host until the job has ended on all of them; sets job_status to the first
# nonzero exit status (1 when a host lost track of its job), else 0.
wait_for_job() {
  local poll output states state
  poll="if [ -e $job_files.status ]; then cat $job_files.status; \
elif kill -0 \"\$(cat $job_files.pid 2>/dev/null)\" 2>/dev/null; then echo running; \
else sleep 2; cat $job_files.status 2>/dev/null || echo lost; fi"
  echo "all: waiting for $RUN_NAME to end on every host (polled every $POLL_SECONDS s);" \
    "Ctrl-C stops waiting and leaves the job and the slice up"
  job_status=0
  if [[ -n "${DRY_RUN:-}" ]]; then
    on_all_hosts "$poll"
    return
  fi
  while true; do
    sleep "$POLL_SECONDS"
    if ! output="$(on_all_hosts "$poll" | tr -d '\r')"; then
      echo "all: could not reach every host; polling again" >&2
      continue
    fi
    grep -qx running <<< "$output" && continue
    states="$(grep -xE '[0-9]+|lost' <<< "$output")" || continue
    break
  done
  for state in $states; do
    if [[ "$state" == lost ]]; then
      echo "all: a host's job ended without recording its exit status" >&2
      state=1
    fi
    if ((job_status == 0 && state != 0)); then
      job_status="$state"
    fi
  done
  echo "all: $RUN_NAME ended on every host, exit statuses: $(tr '\n' ' ' <<< "$states")"
}

delete() {
  gcloud_tpu delete "$TPU_NAME" --quiet
}

left_up() {
  echo >&2
  echo "all: stopped waiting; the job and the slice $TPU_NAME are still up" >&2
  print_job_help >&2
  echo "  delete the slice: launch/tpu_pod.sh delete (with the same TPU_NAME, ZONE, PROJECT)" >&2
}

case "$action" in
  create) create ;;
  install) install ;;
  run) run "$@" ;;
  delete) delete ;;
  all)
    create
    trap delete EXIT
    install
    run "$@"
    trap - EXIT
    trap 'left_up; exit 130' INT
    trap 'left_up; exit 143' TERM
    wait_for_job
    trap - INT TERM
    delete
    exit "$job_status"
    ;;
  -h | --help | help) usage 0 ;;
  *) echo "launch/tpu_pod.sh: unknown action '$action'" >&2; usage 2 ;;
esac
