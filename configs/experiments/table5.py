"""Table V: the deviation measure function f of L_dp (Sec. IV-E, Eq. 12).

  python -m wmmt_jax.sweep --sweep=configs/experiments/table5.py \
      --workdir_root=/tmp/table5 --set dataset.root=/data/LAV-DF

The MSE row is the base (and Table I's WMMT row).
"""

from configs.experiments import base

# Paper row name -> loss.dp_function.
FUNCTIONS = (('L_1', 'l1'), ('L_2', 'l2'), ('cosine', 'cosine'),
             ('D_KL', 'kl'), ('MSE', 'mse'))

# The report's header for the field this table varies.
COLUMN_NAMES = {'loss.dp_function': 'f'}


def get_config(arg=None):
  return base.get_config(arg)


def get_hyper(arg=None):
  """One row per f, in the paper's order."""
  del arg
  return [{base.ROW_KEY: name, 'loss.dp_function': f}
          for name, f in FUNCTIONS]
