#!/usr/bin/env bash
# One host, all its devices: one process, the batch split over every device.
#
# Edit: CONFIG and WORKDIR, or pass them: launch/local.sh CONFIG WORKDIR [--config.x=y ...]
set -euo pipefail
CONFIG=${1:-configs/default.py}
WORKDIR=${2:-workdirs/$(basename "${CONFIG%.py}")}
shift $(( $# > 2 ? 2 : $# ))
exec python -m wmmt_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" "$@"
