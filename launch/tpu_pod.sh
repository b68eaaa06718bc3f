#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: one i2i_jax process per TPU host, joined by
# jax.distributed (which detects the slice by itself, hence --distributed=on).
#
#   launch/tpu_pod.sh create|install|run|delete|all [-- --config.x=y ...]
#
#   create   create the slice (SPOT=1 for a Spot slice)
#   install  copy this checkout to every host and pip install it with jax[tpu]
#   run      run python -m i2i_jax.main on every host at once (extra args after --)
#   delete   delete the slice
#   all      create, install, run, then delete (also when run fails)
#
# Settings (environment): TPU_NAME, ZONE, ACCELERATOR_TYPE (e.g. v5litepod-16, v4-32),
# RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite, tpu-ubuntu2204-base), PROJECT (optional),
# CONFIG (a config file of this checkout), WORKDIR (gs://bucket/path: every host writes its
# checkpoint shards there, so it must be shared). Rerunning `run` resumes from WORKDIR.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 ]] || usage 2
action="$1"
shift
[[ "${1:-}" == "--" ]] && shift

TPU_NAME="${TPU_NAME:-i2i-jax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/pix2pix_facades.py}"
REMOTE_DIR="i2i_jax"
checkout="$(cd "$(dirname "$0")/.." && pwd)"

gcloud_tpu() {
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

on_all_hosts() {
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

create() {
  gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${SPOT:+--spot}
}

install() {
  local archive
  archive="$(mktemp -d)/i2i_jax.tar.gz"
  git -C "$checkout" archive --format=tar.gz --output="$archive" HEAD
  gcloud_tpu scp "$archive" "$TPU_NAME:~/i2i_jax.tar.gz" --worker=all
  on_all_hosts "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR \
    && tar -xzf ~/i2i_jax.tar.gz -C ~/$REMOTE_DIR \
    && python3 -m pip install -q -U 'jax[tpu]' -e ~/$REMOTE_DIR"
}

run() {
  : "${WORKDIR:?set WORKDIR=gs://bucket/path, a directory every TPU host can write}"
  local extra=""
  if [[ $# -gt 0 ]]; then
    extra="$(printf ' %q' "$@")"
  fi
  on_all_hosts "cd ~/$REMOTE_DIR && python3 -m i2i_jax.main --distributed=on \
    --config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR")$extra"
}

delete() {
  gcloud_tpu delete "$TPU_NAME" --quiet
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
    ;;
  -h | --help | help) usage 0 ;;
  *) echo "launch/tpu_pod.sh: unknown action '$action'" >&2; usage 2 ;;
esac
