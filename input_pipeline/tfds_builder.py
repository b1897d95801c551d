"""TFDS builder `wmmt_features`: a dataset's features as ArrayRecord examples.

One example per video: its metadata (file, id, split, label, duration,
video_frames, fps and the three segment lists) and its visual and audio
features, the audio already aligned to the visual length, stored as raw bytes
plus shape (`tfds.features.Tensor(encoding='bytes')`), so reading one is a
single record read and a `frombuffer`.

Configs: one per dataset and storage dtype, `{dataset}` (float32),
`{dataset}_float16` and `{dataset}_bfloat16`, for the datasets `lavdf`
(train / dev / test), `avdeepfake1m` (train / val) and `synthetic`
(train / test). The source is the manual dir: the dataset root that holds the
metadata and `feats/`. From the command line (defaults: the dataset's usual
layout, widths read from the first feature files, `avg_pool` audio):

  tfds build input_pipeline/tfds_builder.py --config=lavdf_float16 \
      --manual_dir=/data/lavdf --data_dir=/data/lavdf/prepared

(the `tfds` launcher itself needs apache-beam installed, tensorflow/datasets
#5463). `prepare.ensure_prepared(config, workdir)` builds with the run
config's settings instead (and is what training uses); both give
directories that `tfds.data_source('wmmt_features/lavdf_float16',
data_dir=...)` reads, and with this module imported `tfds.load` too (TFDS
itself reads ArrayRecord only as a data source).

Example order: split order of the metadata (keys are increasing), so record
i of `as_data_source(split)` is entry i of the metadata's split, less the
videos left out by validation. The dataset's `metadata.json` (TFDS
`MetadataDict`) holds, per split, every record's fields and feature length,
so planning batches and choosing subsets read no example.
"""

import collections
import dataclasses
from concurrent import futures
import itertools
import logging
import os
from typing import Any, Iterator, Optional, Sequence

from array_record.python import array_record_module
from etils import epath
import ml_collections
import ml_dtypes
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import writer as writer_lib

from input_pipeline import formats
from input_pipeline import record_file
from input_pipeline import validation

NAME = 'wmmt_features'
DATASET_VERSION = '1.0.0'
# The splits each dataset defines (DESIGN.md section 4).
DATASET_SPLITS = {
    'lavdf': ('train', 'dev', 'test'),
    'avdeepfake1m': ('train', 'val'),
    'synthetic': ('train', 'test'),
}
# `dataset.layout` of each dataset when built from the command line.
DEFAULT_LAYOUTS = {'lavdf': 'mdp', 'avdeepfake1m': 'ummaformer',
                   'synthetic': 'mdp'}
# `dataset.record_dtype` -> stored dtype; float16 and bfloat16 halve the size.
RECORD_DTYPES = {'float32': np.float32, 'float16': np.float16,
                 'bfloat16': ml_dtypes.bfloat16}
# Written with the data: the readers check it. 2: shard indices
# (`record_file.INDEX_SUFFIX`).
FORMAT_VERSION = 2
# The serialized names of the feature tensors' bytes (`visual`, `audio`),
# in the order of the shard indices' feature columns.
FEATURE_BYTES_KEYS = ('visual/value', 'audio/value')
# Beside the dataset's version directory; lists the videos left out.
VALIDATION_REPORT = 'validation_report.json'
# Feature files loaded ahead of the writer (file reads release the GIL).
_NUM_LOAD_THREADS = 8
_LOAD_AHEAD = 32
# ArrayRecord options: one record per chunk (random access) and no
# compression. TFDS's default zstd makes each read of a real-width video
# several times slower (decompression) and saves little on float features.
_ARRAY_RECORD_OPTIONS = 'group_size:1,uncompressed'
# TFDS keeps keys in order when shuffling is disabled, but buckets its
# temporary files by key / 2**128: keys spread over that range keep the
# order and let the sort run bucket by bucket, not the whole split at once.
_KEY_RANGE = 2**128


def config_name(dataset: str, record_dtype: str) -> str:
  """Builder config name: 'lavdf', 'lavdf_float16', ..."""
  if dataset not in DATASET_SPLITS:
    raise ValueError(f'dataset.name: {dataset!r} has no prepared format; '
                     f'expected one of {tuple(DATASET_SPLITS)}.')
  if record_dtype not in RECORD_DTYPES:
    raise ValueError(f'dataset.record_dtype: unknown dtype {record_dtype!r}; '
                     f'expected one of {tuple(RECORD_DTYPES)}.')
  return dataset if record_dtype == 'float32' else f'{dataset}_{record_dtype}'


@dataclasses.dataclass(eq=False)
class WmmtFeaturesConfig(tfds.core.BuilderConfig):
  """A dataset and the dtype its features are stored in.

  These two fix the example spec; how the source is read (layout, widths,
  audio alignment) are `SourceOptions`.
  """
  dataset: str = 'lavdf'
  record_dtype: str = 'float32'


# The `config.dataset` fields that feature loading
# (`formats.load_video_features`) and validation read; `prepare` passes the
# run's values and hashes them.
SOURCE_FIELDS = ('layout', 'visual_dim', 'audio_dim', 'audio_align',
                 'use_flow', 'audio_rate', 'length_tolerance',
                 'segment_tolerance_s')


@dataclasses.dataclass(frozen=True)
class SourceOptions:
  """How the source is read; they change the content, not the spec.

  Attributes:
    dataset_config: values of `SOURCE_FIELDS` (a run's `config.dataset`).
      Left out: the dataset's usual layout, the widths of the first video's
      files, 'avg_pool' audio and validation's defaults.
    skip_invalid: `dataset.skip_invalid`: leave out the videos validation
      rejects (and list them in the report) instead of failing.
    report_path: where validation writes its report; None = beside the
      dataset's version directory.
  """
  dataset_config: Optional[dict[str, Any]] = None
  skip_invalid: bool = False
  report_path: Optional[str] = None


def _builder_configs() -> list[WmmtFeaturesConfig]:
  return [
      WmmtFeaturesConfig(
          name=config_name(dataset, dtype), dataset=dataset,
          record_dtype=dtype, version=DATASET_VERSION,
          description=(f'{dataset} features stored as {dtype}, audio '
                       'aligned to the visual length.'))
      for dataset in DATASET_SPLITS for dtype in RECORD_DTYPES
  ]


def read_split_records(
    dataset: str, root: str,
    splits: Optional[Any] = None) -> dict[str, list[formats.VideoRecord]]:
  """Each split's records, in metadata order (splits with none left out).

  Args:
    dataset: 'lavdf', 'avdeepfake1m' or 'synthetic'.
    root: the dataset root.
    splits: the splits to read; None = all of the dataset's.
  """
  splits = tuple(DATASET_SPLITS[dataset] if splits is None else splits)
  by_split = collections.defaultdict(list)
  if dataset == 'avdeepfake1m':
    # One metadata file per split (DESIGN.md section 4).
    for split in splits:
      path = f'{root}/{split}_metadata.json'
      if tf.io.gfile.exists(path):
        by_split[split] = formats.read_avdeepfake1m_metadata(path,
                                                             splits=[split])
  else:
    for record in formats.read_lavdf_metadata(f'{root}/metadata.json',
                                              splits=list(splits)):
      by_split[record.split].append(record)
  return {s: by_split[s] for s in splits if by_split[s]}


def dataset_config(dataset: str, options: SourceOptions
                  ) -> ml_collections.ConfigDict:
  """The `config.dataset` that loading and validation read."""
  fields = dict(layout=DEFAULT_LAYOUTS[dataset], visual_dim=0, audio_dim=0,
                audio_align='avg_pool')
  fields.update(options.dataset_config or {})
  unknown = set(fields) - set(SOURCE_FIELDS)
  if unknown:
    raise ValueError(f'SourceOptions.dataset_config: unknown fields '
                     f'{sorted(unknown)}; expected some of {SOURCE_FIELDS}.')
  return ml_collections.ConfigDict(dict(fields, name=dataset))


def load_aligned_features(root: str, ds_config: ml_collections.ConfigDict,
                          record: formats.VideoRecord):
  """One video's visual `[T, Dv]` and aligned audio `[T, Da]`, float32."""
  return formats.load_video_features(root, ds_config, record.split,
                                     record.video_id)


def infer_dims(root: str, ds_config: ml_collections.ConfigDict,
               record: formats.VideoRecord) -> tuple[int, int]:
  """(visual, audio) widths from the first video's feature files."""
  visual, audio = formats.video_feature_paths(root, ds_config, record.split,
                                              record.video_id)
  return (sum(formats.read_npy_shape(p)[-1] for p in visual),
          formats.read_npy_shape(audio)[-1])


def validate(root: str, ds_config: ml_collections.ConfigDict,
             records: list[formats.VideoRecord], skip: bool,
             report_path: str) -> frozenset[str]:
  """The files validation leaves out (raises if any, unless `skip`)."""
  report = validation.validate_dataset(root, ds_config, records)
  validation.check_or_skip(report, skip, report_path)
  return frozenset(report.bad_files)


def _ordered_map(fn, items, num_threads: int, ahead: int) -> Iterator[Any]:
  """fn over items in threads, results in order, at most `ahead` pending."""
  with futures.ThreadPoolExecutor(num_threads) as pool:
    items = iter(items)
    pending = collections.deque(
        pool.submit(fn, x) for x in itertools.islice(items, ahead))
    try:
      while pending:
        result = pending.popleft().result()
        for x in itertools.islice(items, 1):
          pending.append(pool.submit(fn, x))
        yield result
    finally:
      for f in pending:
        f.cancel()


class _UncompressedExampleWriter(writer_lib.ExampleWriter):
  """Writes ArrayRecord shards with `_ARRAY_RECORD_OPTIONS`, and beside each
  local one the index `record_file.RecordFile` reads it by."""

  def write(self, path, examples):
    if self.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      return super().write(path, examples)
    path = os.fspath(path)
    writer = array_record_module.ArrayRecordWriter(path, _ARRAY_RECORD_OPTIONS)
    features = []
    try:
      for _, serialized in examples:
        writer.write(serialized)
        fields = record_file.example_bytes_features(serialized,
                                                    FEATURE_BYTES_KEYS)
        features.append([x for k in FEATURE_BYTES_KEYS
                         for x in fields.get(k, (0, 0))])
    finally:
      writer.close()
    if '://' not in path:
      record_file.write_index(path, np.array(features, np.int64).reshape(
          -1, 2 * len(FEATURE_BYTES_KEYS)))
    return None


class WmmtFeatures(tfds.core.GeneratorBasedBuilder):
  """Prepared WMMT features: one example per video."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: 'Initial release.'}
  BUILDER_CONFIGS = _builder_configs()
  DEFAULT_CONFIG_NAME = 'lavdf'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  The manual dir is the dataset root with the metadata and the features:
  LAV-DF (and the synthetic dataset): `metadata.json` and `feats/` in the
  `mdp` layout (`feats/tsn/rgb/{split}/{id}.npy`,
  `feats/audio_context/{split}/{id}.npy`); AV-Deepfake1M:
  `{train,val}_metadata.json` and `feats/` in the `ummaformer` layout.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default resolves the package through the `importlib_resources`
    # backport, which TFDS does not install.
    return epath.Path(__file__)

  def __init__(self, *, source_options: Optional[SourceOptions] = None,
               **kwargs):
    """`source_options`: how the source is read (default SourceOptions())."""
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self._source_options = source_options or SourceOptions()

  def _info(self) -> tfds.core.DatasetInfo:
    dtype = RECORD_DTYPES[self.builder_config.record_dtype]
    segments = tfds.features.Tensor(shape=(None, 2), dtype=np.float32)
    features = tfds.features.FeaturesDict({
        'file': tfds.features.Text(),
        'video_id': tfds.features.Text(),
        'split': tfds.features.Text(),
        'label': tfds.features.Scalar(np.int32),
        'duration': tfds.features.Scalar(np.float64),
        'video_frames': tfds.features.Scalar(np.int32),
        'fps': tfds.features.Scalar(np.float64),
        'fake_segments': segments,
        'visual_segments': segments,
        'audio_segments': segments,
        # `[T, Dv]` and `[T, Da]` (audio aligned to T) as raw bytes + shape.
        'visual': tfds.features.Tensor(shape=(None, None), dtype=dtype,
                                       encoding='bytes'),
        'audio': tfds.features.Tensor(shape=(None, None), dtype=dtype,
                                      encoding='bytes'),
    })
    return self.dataset_info_from_configs(
        features=features,
        description=__doc__.split('\n\n')[1],
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _example_writer(self):
    return _UncompressedExampleWriter(file_format=self.info.file_format)

  def _as_dataset(self, split, decoders=None, read_config=None,
                  shuffle_files=False):
    """`tfds.load` / `as_dataset`: the split's records read in order.

    TFDS reads ArrayRecord files only as a random-access data source; this
    reads them sequentially in a tf.data pipeline (shard order shuffled
    with `shuffle_files`), decoded like any TFDS dataset.
    """
    if self.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      return super()._as_dataset(split, decoders, read_config, shuffle_files)
    instructions = self.info.splits[split].file_instructions
    shards = tf.data.Dataset.from_tensor_slices((
        [os.fspath(fi.filename) for fi in instructions],
        np.array([fi.skip for fi in instructions], np.int64),
        np.array([fi.take for fi in instructions], np.int64)))
    if shuffle_files:
      seed = read_config.shuffle_seed if read_config else None
      shards = shards.shuffle(len(instructions), seed=seed)

    def read_shard(filename, skip, take):
      reader = array_record_module.ArrayRecordReader(filename.decode())
      try:
        for position in range(skip, skip + take):
          yield reader.read([position])[0]
      finally:
        reader.close()

    serialized = shards.interleave(
        lambda *shard: tf.data.Dataset.from_generator(
            read_shard, args=shard,
            output_signature=tf.TensorSpec([], tf.string)),
        cycle_length=1)
    parser = tfds.core.example_parser.ExampleParser(
        self.info.features.get_serialized_info())
    return serialized.map(
        lambda x: self.info.features.decode_example(
            parser.parse_example(x), decoders=decoders),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    dataset = self.builder_config.dataset
    options = self._source_options
    ds_config = dataset_config(dataset, options)
    by_split = read_split_records(dataset, root)
    if not by_split:
      raise ValueError(f'{root}: no {dataset} metadata entries for the splits '
                       f'{DATASET_SPLITS[dataset]}.')
    if not ds_config.visual_dim or not ds_config.audio_dim:
      first = next(iter(by_split.values()))[0]
      dims = infer_dims(root, ds_config, first)
      ds_config.visual_dim = ds_config.visual_dim or dims[0]
      ds_config.audio_dim = ds_config.audio_dim or dims[1]
    report_path = options.report_path or os.path.join(
        os.path.dirname(os.fspath(self.data_dir)), VALIDATION_REPORT)
    excluded = validate(root, ds_config,
                        [r for rs in by_split.values() for r in rs],
                        options.skip_invalid, report_path)
    metadata = self.info.metadata
    metadata.update(
        format_version=FORMAT_VERSION, dataset=dataset,
        record_dtype=self.builder_config.record_dtype,
        visual_dim=ds_config.visual_dim, audio_dim=ds_config.audio_dim,
        source=ds_config.to_dict(), excluded_files=sorted(excluded),
        splits={})
    generators = {}
    for split, records in by_split.items():
      kept = [r for r in records if r.file not in excluded]
      if kept:
        generators[split] = self._generate_examples(root, ds_config, split,
                                                    kept)
      else:
        logging.warning('%s: every video of split %r failed validation; the '
                        'split is left out.', root, split)
    return generators

  def _generate_examples(self, root, ds_config, split, records):
    dtype = RECORD_DTYPES[self.builder_config.record_dtype]
    step = _KEY_RANGE // len(records)
    lengths = []

    def load(record):
      visual, audio = load_aligned_features(root, ds_config, record)
      return record, visual.astype(dtype), audio.astype(dtype)

    for i, (record, visual, audio) in enumerate(
        _ordered_map(load, records, _NUM_LOAD_THREADS, _LOAD_AHEAD)):
      lengths.append(visual.shape[0])
      yield i * step, dict(record_fields(record), visual=visual, audio=audio)
    # After the last example: TFDS writes the metadata when every split is
    # generated.
    self.info.metadata['splits'][split] = split_index(records, lengths)


def record_fields(record: formats.VideoRecord) -> dict[str, Any]:
  """A record's fields as stored (the example without its features)."""
  return {
      'file': record.file,
      'video_id': record.video_id,
      'split': record.split,
      'label': np.int32(record.label),
      'duration': np.float64(record.duration),
      'video_frames': np.int32(record.video_frames),
      'fps': np.float64(record.fps),
      **{k: np.asarray(getattr(record, k), np.float32).reshape(-1, 2)
         for k in _SEGMENT_FIELDS},
  }


_SEGMENT_FIELDS = ('fake_segments', 'visual_segments', 'audio_segments')
_SEPARATOR = '\n'
_NO_SEGMENTS = np.zeros((0, 2), np.float32)
_NO_SEGMENTS.flags.writeable = False


def split_index(records: Sequence[formats.VideoRecord],
                lengths: Sequence[int]) -> dict[str, Any]:
  """One split's records and feature lengths as compact JSON columns.

  Strings joined by newlines and segments flattened (with per-record
  counts): a million records load in seconds, not as a million small JSON
  objects.
  """
  for record in records:
    if _SEPARATOR in record.file or _SEPARATOR in record.video_id:
      raise ValueError(f'{record.file!r}: file names with a newline are not '
                       'supported.')
  index = {
      'file': _SEPARATOR.join(r.file for r in records),
      'video_id': _SEPARATOR.join(r.video_id for r in records),
      'label': [r.label for r in records],
      'duration': [r.duration for r in records],
      'video_frames': [r.video_frames for r in records],
      'fps': [r.fps for r in records],
      'length': [int(n) for n in lengths],
  }
  for k in _SEGMENT_FIELDS:
    segments = [np.asarray(getattr(r, k), np.float32).reshape(-1, 2)
                for r in records]
    index[f'{k}_count'] = [len(x) for x in segments]
    index[k] = np.concatenate(segments).ravel().tolist() if segments else []
  return index


def index_files(index: dict[str, Any]) -> list[str]:
  """The `file` of each record of a `split_index`."""
  return index['file'].split(_SEPARATOR) if index['length'] else []


def records_from_index(index: dict[str, Any],
                       split: str) -> list[formats.VideoRecord]:
  """The VideoRecords of a `split_index` (an exact round trip)."""
  segments = []
  for k in _SEGMENT_FIELDS:
    flat = np.asarray(index[k], np.float32).reshape(-1, 2)
    flat.flags.writeable = False
    ends = np.cumsum(index[f'{k}_count']).tolist()
    # Views of one array; a shared empty one for the many without.
    segments.append([flat[e - c:e] if c else _NO_SEGMENTS
                     for e, c in zip(ends, index[f'{k}_count'])])
  files, video_ids = index_files(index), index['video_id'].split(_SEPARATOR)
  # Positional arguments: noticeably faster for a million records.
  return [
      formats.VideoRecord(file, video_id, split, label, duration, frames,
                          fps, fake, visual, audio)
      for file, video_id, label, duration, frames, fps, fake, visual, audio
      in zip(files, video_ids, index['label'], index['duration'],
             index['video_frames'], index['fps'], *segments)
  ]
