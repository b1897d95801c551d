"""Multi-process start-up: `jax.distributed.initialize` when the job has several.

The same `main.py` runs on one process or many (JAX's multi-controller
runtime: every process runs the whole program on its own devices). Whether a
job is multi-process is decided, before any device is touched, from:

1. explicit settings, flags or environment: `--coordinator_address`
   (`JAX_COORDINATOR_ADDRESS`), `--num_processes` (`JAX_NUM_PROCESSES`),
   `--process_id` (`JAX_PROCESS_ID`); `--local_device_ids`
   (`JAX_LOCAL_DEVICE_IDS`) picks this process's GPUs when several processes
   share a host;
2. else `--distributed` (used by `launch/tpu_pod.sh`), or a detected
   cluster: SLURM (`srun` with more than one task) or Open MPI (`mpirun -n
   N`); `jax.distributed.initialize()` then reads the cluster's settings
   itself (on Cloud TPU pods from the TPU metadata);
3. else one process, and nothing is initialised.

GPU clusters: with one process per GPU (`srun --ntasks-per-node=G
--gpus-per-task=1`), SLURM sets each process's visible GPU and JAX sees one
local device; with one process per node (`--ntasks-per-node=1`), JAX sees
all G GPUs of the node as local devices. Either way the global mesh holds
every GPU of the job. On CPU (tests, `launch/multiprocess_cpu.sh`) the
collectives go through gloo.

A process that dies is noticed by the others through missed heartbeats:
after `heartbeat_timeout_s` the runtime ends the survivors with an error
naming the unhealthy task, instead of letting them wait in a collective.
"""

import dataclasses
import os
from typing import Optional, Sequence

from absl import logging
import jax


@dataclasses.dataclass(frozen=True)
class Settings:
  """How to join a multi-process job; empty fields mean "detect"."""
  coordinator_address: str = ''
  num_processes: int = 0
  process_id: int = -1
  local_device_ids: Sequence[int] = ()
  auto: bool = False
  heartbeat_timeout_s: int = 100
  initialization_timeout_s: int = 300


def _env_int(name):
  value = os.environ.get(name, '')
  if not value:
    return None
  try:
    return int(value)
  except ValueError as e:
    raise ValueError(f'Environment variable {name}={value!r}: expected an '
                     'integer.') from e


def from_env(**overrides) -> Settings:
  """Settings from the environment, with non-empty `overrides` on top."""
  settings = {
      'coordinator_address': os.environ.get('JAX_COORDINATOR_ADDRESS', ''),
      'num_processes': _env_int('JAX_NUM_PROCESSES') or 0,
      'process_id': _env_int('JAX_PROCESS_ID'),
      'local_device_ids': tuple(
          int(i) for i in os.environ.get('JAX_LOCAL_DEVICE_IDS', '').split(',')
          if i.strip()),
  }
  if settings['process_id'] is None:
    settings['process_id'] = -1
  settings.update({k: v for k, v in overrides.items()
                   if v not in (None, '', (), [])})
  return Settings(**settings)


def detected_cluster() -> Optional[str]:
  """The multi-process cluster this process runs in, if any."""
  env = os.environ
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_STEP_ID' in env:
    return 'slurm'
  if int(env.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1:
    return 'mpi'
  return None


def _check(settings: Settings):
  explicit = bool(settings.coordinator_address) or settings.num_processes > 1
  if not explicit:
    return False
  if settings.num_processes < 1:
    raise ValueError('--num_processes (JAX_NUM_PROCESSES): expected the '
                     'number of processes of the job (> 0) with '
                     f'--coordinator_address={settings.coordinator_address}.')
  if not settings.coordinator_address:
    raise ValueError('--coordinator_address (JAX_COORDINATOR_ADDRESS): '
                     'expected host:port of process 0 with --num_processes='
                     f'{settings.num_processes}.')
  if not 0 <= settings.process_id < settings.num_processes:
    raise ValueError(
        f'--process_id (JAX_PROCESS_ID) = {settings.process_id}: expected '
        f'an integer in [0, {settings.num_processes}).')
  return settings.num_processes > 1


def initialize(settings: Settings) -> bool:
  """Joins the multi-process job, if this is one; call before using devices.

  Args:
    settings: explicit settings (see `from_env`); empty fields are detected.

  Returns:
    True if `jax.distributed.initialize` ran, False on a single process.
  """
  explicit = _check(settings)
  cluster = None
  if not explicit:
    cluster = 'auto' if settings.auto else detected_cluster()
  if not explicit and cluster is None:
    return False
  # CPU processes (tests, multiprocess_cpu.sh) exchange data through gloo;
  # GPU and TPU backends ignore this.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = dict(heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
                initialization_timeout=settings.initialization_timeout_s)
  if settings.local_device_ids:
    kwargs['local_device_ids'] = list(settings.local_device_ids)
  if explicit:
    kwargs.update(coordinator_address=settings.coordinator_address,
                  num_processes=settings.num_processes,
                  process_id=settings.process_id)
  logging.info('Initialising JAX distributed (%s): %s',
               'explicit' if explicit else cluster, kwargs)
  jax.distributed.initialize(**kwargs)
  return True
