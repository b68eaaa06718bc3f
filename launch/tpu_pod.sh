#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: one i2i_jax process per TPU host, joined by
# jax.distributed (which detects the slice by itself, hence --distributed=on).
#
#   launch/tpu_pod.sh create|install|run|delete|all [-- --config.x=y ...]
#
#   create   create the slice (SPOT=1 for a Spot slice)
#   install  copy this checkout's working tree to every host and pip install it with jax[tpu]:
#            uncommitted changes and untracked files included, .git and what git ignores
#            (.venv, build outputs) left out. Each install goes to a new directory,
#            ~/i2i_jax_deploys/UTC-TIME-COMMIT-PID (`current` links to the latest); none is
#            ever deleted
#   run      start python -m i2i_jax.main on every host (extra args after --), detached from
#            ssh: the job goes on when the connection drops. Each host writes its output to
#            ~/i2i_jax_logs/RUN_NAME.log; run prints how to follow the log and stop the job
#   delete   delete the slice
#   all      create, install, run, wait for the job to end on every host, then delete (also
#            when a step before fails), and exit with the job's status: 75 when it saved a
#            checkpoint and stopped early (preempted: `all` again resumes). Ctrl-C while it
#            waits leaves the job and the slice up
#
# Settings (environment): TPU_NAME, ZONE, ACCELERATOR_TYPE (e.g. v5litepod-16, v4-32),
# RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite, tpu-ubuntu2204-base), PROJECT (optional),
# CONFIG (a config file of this checkout), WORKDIR (gs://bucket/path, or an absolute path on
# a file system every host mounts, outside ~/i2i_jax_deploys: every host writes its
# checkpoint shards there). Rerunning `run` resumes from WORKDIR. RUN_NAME names the log
# (default TPU_NAME-UTC date and time). POLL_SECONDS (60): how often `all` polls the hosts;
# UNREACHABLE_SECONDS (600): how long it polls hosts that do not answer before it gives up.
# DRY_RUN=1 prints the gcloud commands (and the files install would deploy) instead.
set -euo pipefail

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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
UNREACHABLE_SECONDS="${UNREACHABLE_SECONDS:-600}"
DEPLOY_DIR="i2i_jax_deploys"
LOG_DIR="i2i_jax_logs"
# i2i_jax's exit status for "saved a checkpoint and stopped early": rerun to resume.
PREEMPTED=75
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
  local temporary list count commit changes version
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
  # A new directory per install: a job started from an earlier one keeps its files, and
  # nothing under any of them (a WORKDIR there, say) is ever deleted.
  version="$(date -u +%Y%m%d-%H%M%S)-${commit// /-}-$$"
  echo "install: deploying the working tree of $checkout: $count files, commit $commit" \
    "plus $changes uncommitted change(s) (git status lists them); .git and files git" \
    "ignores are left out; into ~/$DEPLOY_DIR/$version on every host"
  if [[ -n "${DRY_RUN:-}" ]]; then
    tr '\0' '\n' < "$list" | sed 's/^/  /'
  else
    tar -czf "$temporary/i2i_jax.tar.gz" -C "$checkout" --null -T "$list"
  fi
  gcloud_tpu scp "$temporary/i2i_jax.tar.gz" "$TPU_NAME:~/i2i_jax.tar.gz" --worker=all
  on_all_hosts "mkdir -p ~/$DEPLOY_DIR/$version \
    && tar -xzf ~/i2i_jax.tar.gz -C ~/$DEPLOY_DIR/$version && rm ~/i2i_jax.tar.gz \
    && python3 -m pip install -q -U 'jax[tpu]' -e ~/$DEPLOY_DIR/$version \
    && ln -sfn $version ~/$DEPLOY_DIR/current"
  rm -rf "$temporary"
}

# Refuses a WORKDIR that a host would not share or that lies in the deployed code: a relative
# one would land in the deploy directory the job runs in.
check_workdir() {
  local fix="Fix: set WORKDIR=gs://bucket/path, or an absolute path on a file system every host mounts, outside ~/$DEPLOY_DIR"
  if [[ -z "${WORKDIR:-}" ]]; then
    printf 'launch/tpu_pod.sh: error: WORKDIR is not set.\n%s\n' "$fix" >&2
    exit 2
  fi
  if [[ "$WORKDIR" != gs://* && "$WORKDIR" != /* ]]; then
    printf "launch/tpu_pod.sh: error: WORKDIR='%s' is neither gs://... nor an absolute path; the job would write its checkpoints inside the deployed code.\n%s\n" "$WORKDIR" "$fix" >&2
    exit 2
  fi
  if [[ "/$WORKDIR/" == */"$DEPLOY_DIR"/* || "/$WORKDIR/" == */../* ]]; then
    printf "launch/tpu_pod.sh: error: WORKDIR='%s' is in, or may lead into, ~/%s, the deployed code.\n%s\n" "$WORKDIR" "$DEPLOY_DIR" "$fix" >&2
    exit 2
  fi
}

run() {
  check_workdir
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
  on_all_hosts "mkdir -p ~/$LOG_DIR && cd -P ~/$DEPLOY_DIR/current || exit 1; \
rm -f $job_files.pid $job_files.status; echo \"deploy: \$(pwd)\" > $job_files.log; \
setsid nohup bash -c $(printf '%q' "$job") >> $job_files.log 2>&1 < /dev/null & \
for i in \$(seq 50); do [ -s $job_files.pid ] && break; sleep 0.1; done; \
if [ -s $job_files.pid ]; then echo \"\$(hostname): started $RUN_NAME\"; \
else echo \"\$(hostname): $RUN_NAME did not start, see $job_files.log\" >&2; exit 1; fi"
  echo "run: started $RUN_NAME on every host of $TPU_NAME, detached; its output goes to" \
    "$job_files.log on each host"
  print_job_help
}

# Polls every host until the job has ended on all of them; sets job_status to the first
# failure's exit status (1 when a host lost track of its job), else 75 if the job stopped
# early, else 0. Hosts that do not answer for UNREACHABLE_SECONDS end the wait: see
# hosts_gone.
wait_for_job() {
  local poll output states state unreachable_since=""
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
      unreachable_since="${unreachable_since:-$(date +%s)}"
      if (($(date +%s) - unreachable_since >= UNREACHABLE_SECONDS)); then
        hosts_gone
        return
      fi
      echo "all: could not reach every host; polling again" >&2
      continue
    fi
    unreachable_since=""
    grep -qx running <<< "$output" && continue
    states="$(grep -xE '[0-9]+|lost' <<< "$output")" || continue
    break
  done
  for state in $states; do
    if [[ "$state" == lost ]]; then
      echo "all: a host's job ended without recording its exit status" >&2
      state=1
    fi
    if ((state != 0 && state != PREEMPTED && (job_status == 0 || job_status == PREEMPTED))); then
      job_status="$state"
    elif ((state == PREEMPTED && job_status == 0)); then
      job_status="$PREEMPTED"
    fi
  done
  echo "all: $RUN_NAME ended on every host, exit statuses: $(tr '\n' ' ' <<< "$states")"
}

# After UNREACHABLE_SECONDS without an answer from every host: a preempted (or terminated)
# slice has lost its job, which resumes from WORKDIR in a new one, so job_status is 75 and
# the slice is deleted; a slice in any other state is left up for the user to look at.
hosts_gone() {
  local state
  local gone="the hosts of $TPU_NAME did not answer for $UNREACHABLE_SECONDS s"
  state="$(gcloud_tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null || echo unknown)"
  if [[ "$state" == PREEMPTED || "$state" == TERMINATED ]]; then
    echo "all: $gone; the slice is $state. Deleting it; launch/tpu_pod.sh all again" \
      "resumes from WORKDIR (exit status $PREEMPTED)" >&2
    job_status="$PREEMPTED"
    return
  fi
  echo "all: error: $gone; the slice is $state." >&2
  echo "Fix: check the slice (gcloud compute tpus tpu-vm describe $TPU_NAME), then delete it" >&2
  left_up
  exit 1
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
    check_workdir
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
