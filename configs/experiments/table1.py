"""Table I, the WMMT row: the full model on LAV-DF (mAP@0.1:0.7, AR@20..2).

  python -m wmmt_jax.sweep --sweep=configs/experiments/table1.py \
      --workdir_root=/tmp/table1 --set dataset.root=/data/LAV-DF

The row is the base config itself (configs/lavdf.py). Tables II (AV-Deepfake1M)
and III (cross-dataset) need AV-Deepfake1M configs, which do not exist yet.
"""

from configs.experiments import base


def get_config(arg=None):
  return base.get_config(arg)


def get_hyper(arg=None):
  """One row: WMMT with all components (IntraFE, MTL, InterFE, L_dp)."""
  del arg
  return [{base.ROW_KEY: 'WMMT'}]
