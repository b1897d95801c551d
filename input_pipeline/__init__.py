"""Input pipeline of wmmt_jax.

- `formats`: LAV-DF metadata, feature files, audio alignment.
- `synthetic`: the embedded synthetic dataset.
- `pipeline`: deterministic tf.data pipelines for training and evaluation.

The entry points are re-exported here.
"""

from input_pipeline.formats import VideoRecord
from input_pipeline.pipeline import create_eval_dataset
from input_pipeline.pipeline import create_train_dataset
from input_pipeline.pipeline import get_records
from input_pipeline.pipeline import SUBSETS
