#!/usr/bin/env bash
# N JAX processes on this host, each with D CPU devices, joined through
# jax.distributed (gloo collectives): a multi-host job on one machine, for the
# tests and for debugging multi-process code without a cluster.
#
# Edit: NUM_PROCESSES (N, default 2) and DEVICES_PER_PROCESS (D, default 2),
# or set them in the environment; PORT (default: a free one); LOGDIR (default
# WORKDIR/logs, one process_<i>.log and process_<i>.pid per process).
#
#   launch/multiprocess_cpu.sh CONFIG WORKDIR [--config.x=y ...]
#
# Waits for every process and exits with the first non-zero status. A process
# that dies ends the others through the heartbeat timeout
# (--heartbeat_timeout_s, default 100 s; pass a shorter one to test this).
set -uo pipefail
CONFIG=${1:?usage: launch/multiprocess_cpu.sh CONFIG WORKDIR [flags]}
WORKDIR=${2:?usage: launch/multiprocess_cpu.sh CONFIG WORKDIR [flags]}
shift 2
PYTHON=${PYTHON:-python}
N=${NUM_PROCESSES:-2}
D=${DEVICES_PER_PROCESS:-2}
PORT=${PORT:-$("${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
LOGDIR=${LOGDIR:-${WORKDIR}/logs}
mkdir -p "${LOGDIR}"

pids=()
stop() { kill "${pids[@]}" 2>/dev/null; exit 143; }
trap stop INT TERM
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${D}" \
    "${PYTHON}" -m wmmt_jax.main --config="${CONFIG}" --workdir="${WORKDIR}" \
    --coordinator_address="localhost:${PORT}" --num_processes="${N}" \
    --process_id="${i}" "$@" > "${LOGDIR}/process_${i}.log" 2>&1 &
  pids+=($!)
  echo "$!" > "${LOGDIR}/process_${i}.pid"
done
echo "Started ${N} processes x ${D} CPU devices (coordinator localhost:${PORT}); logs in ${LOGDIR}."

status=0
for ((i = 0; i < N; i++)); do
  wait "${pids[i]}"
  rc=$?
  echo "process ${i} exited with status ${rc}"
  if ((rc != 0 && status == 0)); then status=${rc}; fi
done
exit "${status}"
