"""WMMT on AV-Deepfake1M with the paper's settings (Sec. IV-A), real widths.

  python -m wmmt_jax.main --config=configs/avdeepfake1m.py \
      --config.dataset.root=/data/AV-Deepfake1M --workdir=/tmp/wmmt_av1m

`dataset.root` holds `train_metadata.json` and `val_metadata.json` and the
features in `dataset.layout` ('mdp': `feats/tsn/rgb/{split}/{id}.npy` and
`feats/audio_context/{split}/{id}.npy`; `{id}` is the file path without its
extension, e.g. `id00012/21Uxsk56VDQ/00001/real`). The test split's labels
are not public, so the model is evaluated on `val`, with the AV-Deepfake1M
protocol (AP@0.5/0.75/0.9/0.95, AR@50/30/20/10/5) and the paper's (Table II)
beside it. Everything else is configs/lavdf.py's.
"""

from configs import lavdf


def get_config(arg=None):
  """AV-Deepfake1M config; takes no arg."""
  if arg:
    raise ValueError(f'configs/avdeepfake1m.py: takes no config arg, got '
                     f'{arg!r}.')
  config = lavdf.get_config()
  config.dataset.name = 'avdeepfake1m'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'
  config.eval.protocol = 'avdeepfake1m'
  config.eval.extra_protocols = ('wmmt',)
  return config
