"""Trains and evaluates WMMT.

  python -m wmmt_jax.main --config=configs/default.py --workdir=/tmp/wmmt \
      --config.total_steps=3000

The same command runs on one process or many (`wmmt_jax/distributed.py`):
several processes join through `--coordinator_address`, `--num_processes`
and `--process_id` (or `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID`), `--distributed`, or a detected SLURM / MPI job.

Exit status: 0 done; 1 a fault explained in one message (unusable workdir,
non-finite values, unreadable input); 143 (= 128 + SIGTERM) preempted after
saving the current step; running the same command again resumes.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from wmmt_jax import distributed
from wmmt_jax import errors
from wmmt_jax import preemption
from wmmt_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
config_flags.DEFINE_config_file('config', None, 'Config file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])
flags.DEFINE_string('coordinator_address', '',
                    'host:port of process 0 of a multi-process job '
                    '(default: JAX_COORDINATOR_ADDRESS).')
flags.DEFINE_integer('num_processes', 0, 'Processes in the job (default: '
                     'JAX_NUM_PROCESSES; 0/1 = one).')
flags.DEFINE_integer('process_id', -1, 'This process, in [0, num_processes) '
                     '(default: JAX_PROCESS_ID).')
flags.DEFINE_list('local_device_ids', [], 'Local device ids this process '
                  'uses (default: JAX_LOCAL_DEVICE_IDS; all).')
flags.DEFINE_bool('distributed', False, 'Initialise jax.distributed from '
                  "the cluster's own settings (TPU pods, SLURM, MPI).")
flags.DEFINE_integer('heartbeat_timeout_s', 100, 'A process missing '
                     'heartbeats this long ends the job with an error.')
flags.DEFINE_integer('initialization_timeout_s', 300, 'How long processes '
                     'wait for each other at start-up.')


class _QuietCheckpointLogs(std_logging.Filter):
  """Drops Orbax's per-save INFO lines; its warnings and errors still show."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING or
            f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointLogs())
  # Before anything touches a device.
  distributed.initialize(distributed.from_env(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes or None,
      process_id=None if FLAGS.process_id < 0 else FLAGS.process_id,
      local_device_ids=tuple(int(i) for i in FLAGS.local_device_ids),
      auto=FLAGS.distributed, heartbeat_timeout_s=FLAGS.heartbeat_timeout_s,
      initialization_timeout_s=FLAGS.initialization_timeout_s))
  # tf.data only: keep TensorFlow off any accelerator JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d / %d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_CODE)
  except errors.RunError as e:
    # The message says what and where; the traceback is for `-v 1`.
    logging.debug('Traceback:', exc_info=True)
    logging.error('%s', e)
    sys.exit(1)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
