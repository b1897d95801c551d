"""Input pipeline of wmmt_jax.

- `formats`: LAV-DF metadata, feature files, audio alignment.
- `synthetic`: the embedded synthetic dataset.
- `validation`: checks of a dataset's metadata and feature files.
- `pipeline`: deterministic tf.data pipelines for training and evaluation,
  reading a `FeatureSource` (`.npy` files or prepared records).
- `tfds_builder`, `prepare`: datasets converted once into ArrayRecord files
  (a TFDS dataset) and read back by `prepare.PreparedSource`.

The entry points are re-exported here.
"""

from input_pipeline.formats import VideoRecord
from input_pipeline.pipeline import create_eval_dataset
from input_pipeline.pipeline import create_train_dataset
from input_pipeline.pipeline import FeatureSource
from input_pipeline.pipeline import get_records
from input_pipeline.pipeline import NpySource
from input_pipeline.pipeline import SUBSETS
