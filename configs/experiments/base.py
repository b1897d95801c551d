"""The base config of every experiment, and how a sweep row applies to it.

The paper's setting is configs/lavdf.py (LAV-DF, Sec. IV-A, the `wmmt`
protocol: mAP@0.1:0.7, AR@20,10,5,2). Config args:

- '' (default): configs/lavdf.py; set `--config.dataset.root=/data/LAV-DF`.
- 'synthetic': configs/default.py (the embedded synthetic data, default
  widths and steps), scored with the paper's `wmmt` protocol so the report
  lays it out as the paper's tables. Its numbers are not comparable with the
  paper's.
- 'tiny': configs/default.py:tiny, for tests and smoke runs.

A sweep row is a dict `{'row': name, 'model.intra_fe': False, ...}`: the
row's name and dotted config keys with the values that row sets; every other
field is the base's.
"""

import copy

from configs import default
from configs import lavdf

ARGS = ('', 'synthetic', 'tiny')
# The key of a sweep row that names it; every other key is a config field.
ROW_KEY = 'row'


def get_config(arg=None):
  """The base config for `arg` (see the module docstring)."""
  arg = arg or ''
  if arg not in ARGS:
    raise ValueError(f'configs/experiments: unknown config arg {arg!r}; '
                     f'expected one of {ARGS}.')
  if not arg:
    return lavdf.get_config()
  config = default.get_config('tiny' if arg == 'tiny' else None)
  # The paper's metrics (Table I-VII), so rows line up with its tables.
  config.eval.protocol = 'wmmt'
  return config


def overrides(row):
  """`{dotted key: value}` of a sweep row, its name left out."""
  return {k: v for k, v in row.items() if k != ROW_KEY}


def apply(config, row):
  """A copy of `config` with a sweep row's overrides set.

  Raises:
    KeyError: a key of the row is not a field of the config (sweeps never
      add fields).
  """
  config = copy.deepcopy(config)
  for key, value in overrides(row).items():
    *path, name = key.split('.')
    node = config
    for part in path:
      node = node[part]
    if name not in node:
      raise KeyError(f'sweep row {row.get(ROW_KEY)!r}: {key} is not a config '
                     'field.')
    node[name] = value
  return config
