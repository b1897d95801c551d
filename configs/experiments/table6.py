"""Table VI: the deviation measure objective of L_dp (Sec. IV-E).

  python -m wmmt_jax.sweep --sweep=configs/experiments/table6.py \
      --workdir_root=/tmp/table6 --set dataset.root=/data/LAV-DF

The T_m row is the base (and Table I's WMMT row).
"""

from configs.experiments import base

# Paper row name -> loss.dp_objective.
OBJECTIVES = (('T_a', 'a'), ('T_v', 'v'), ('T_m', 'm'), ('T_a+T_v', 'a+v'),
              ('T_a+T_v+T_m', 'a+v+m'))

# The report's header for the field this table varies.
COLUMN_NAMES = {'loss.dp_objective': 'objective'}


def get_config(arg=None):
  return base.get_config(arg)


def get_hyper(arg=None):
  """One row per objective, in the paper's order."""
  del arg
  return [{base.ROW_KEY: name, 'loss.dp_objective': objective}
          for name, objective in OBJECTIVES]
