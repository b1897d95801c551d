"""Table VII: the ablation ladder, IntraFE, MTL, InterFE and L_dp in turn.

  python -m wmmt_jax.sweep --sweep=configs/experiments/table7.py \
      --workdir_root=/tmp/table7 --set dataset.root=/data/LAV-DF
  # On the synthetic data, here:
  python -m wmmt_jax.sweep --sweep=configs/experiments/table7.py \
      --config_arg=synthetic --workdir_root=workdirs/table7

The baseline (Sec. IV-F) localizes with `h_m` on the concatenated visual and
audio embeddings; each next row switches one more component on, and the last
one is the base (Table I's WMMT row).
"""

from configs.experiments import base

# Added in this order; a row has the components up to its own.
COMPONENTS = (('IntraFE', 'model.intra_fe'), ('MTL', 'model.multitask'),
              ('InterFE', 'model.inter_fe'), ('L_dp', 'loss.use_dp'))

# The report's headers: the paper's names of the components.
COLUMN_NAMES = {key: name for name, key in COMPONENTS}


def get_config(arg=None):
  return base.get_config(arg)


def get_hyper(arg=None):
  """baseline, +IntraFE, +MTL, +InterFE, +L_dp."""
  del arg
  rows = []
  for n in range(len(COMPONENTS) + 1):
    row = {key: i < n for i, (_, key) in enumerate(COMPONENTS)}
    row[base.ROW_KEY] = '+' + COMPONENTS[n - 1][0] if n else 'baseline'
    rows.append(row)
  return rows
