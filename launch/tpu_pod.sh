#!/usr/bin/env bash
# Cloud TPU pod: install and run on every worker with one command.
#
#   launch/tpu_pod.sh TPU_NAME ZONE [CONFIG] [WORKDIR] [--config.x=y ...]
#
# Edit: REPO (where workers get the code), and CONFIG / WORKDIR (or pass
# them). WORKDIR must be a gs:// path all workers share (Orbax checkpoints,
# TensorBoard, results.json); point config.dataset.root at gs:// too.
#
# Every worker runs the same command (--worker=all); `--distributed` makes
# each call jax.distributed.initialize(), which finds the other workers from
# the TPU metadata. The global batch (config.batch_size) must be a multiple
# of the pod's chip count. Only worker 0 writes logs and results.
set -euo pipefail
TPU_NAME=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE [CONFIG] [WORKDIR] [flags]}
ZONE=${2:?usage: launch/tpu_pod.sh TPU_NAME ZONE [CONFIG] [WORKDIR] [flags]}
CONFIG=${3:-configs/lavdf.py}
WORKDIR=${4:-gs://YOUR_BUCKET/workdirs/wmmt}
shift $(( $# > 4 ? 4 : $# ))
REPO=${REPO:-https://github.com/YOUR_ORG/wmmt_jax.git}

EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" --worker=all \
  --command="set -e
    if [ ! -d wmmt_jax ]; then git clone ${REPO} wmmt_jax; fi
    cd wmmt_jax && git pull --ff-only
    python3 -m venv .venv && . .venv/bin/activate
    pip install -q -U pip && pip install -q -e . 'jax[tpu]'
    python -m wmmt_jax.main --distributed --config=${CONFIG} --workdir=${WORKDIR}${EXTRA}"
