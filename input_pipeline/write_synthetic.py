"""Writes a LAV-DF-format synthetic dataset and prints its directory.

  python -m input_pipeline.write_synthetic --out=/tmp/fake_lavdf \
      --config=configs/default.py:real_widths \
      --config.dataset.synthetic.num_train=400

The directory holds `metadata.json` (LAV-DF's fields) and the features in
the MDP layout (`input_pipeline/synthetic.py`), so `configs/lavdf.py`
trains on it with `--config.dataset.root=<printed directory>`: a dry run of
the real-data path without the real data.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from input_pipeline import synthetic

_OUT = flags.DEFINE_string('out', None, 'Parent directory to write under.')
flags.mark_flag_as_required('out')
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/default.py', 'Config whose dataset.* fields to use.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(synthetic.ensure_synthetic_dataset(_OUT.value, _CONFIG.value))


if __name__ == '__main__':
  app.run(main)
