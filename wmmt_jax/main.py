"""Trains and evaluates WMMT.

  python -m wmmt_jax.main --config=configs/default.py --workdir=/tmp/wmmt \
      --config.total_steps=3000
"""

import logging as std_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from wmmt_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
config_flags.DEFINE_config_file('config', None, 'Config file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietCheckpointLogs(std_logging.Filter):
  """Drops Orbax's per-save INFO lines; its warnings and errors still show."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING or
            f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietCheckpointLogs())
  # tf.data only: keep TensorFlow off any accelerator JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d / %d, local devices %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
