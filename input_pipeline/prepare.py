"""Prepared datasets: every video's features converted once into ArrayRecord.

`ensure_prepared(config, workdir)` writes `config.dataset` (all the splits
the dataset defines) through the TFDS builder `wmmt_features`
(input_pipeline/tfds_builder.py) into

  {dataset.prepared_dir or {root}/prepared}/{dataset.name}-{hash}/

which is a TFDS data dir: `tfds.data_source('wmmt_features/lavdf_float16',
data_dir=...)` reads it, and so does `PreparedSource`, the training and
evaluation pipelines' reader. The hash covers everything that changes the
content (`prepared_settings`): dataset, source root and metadata files,
layout, widths, audio alignment, storage dtype and the format versions, so a
changed setting prepares a new directory and a finished one is reused.

A preparation is built in a private temporary sibling and renamed into place
when complete (local file systems), so an interrupted or failed one leaves
nothing a later run would read; later runs delete the temporary directories
of dead preparers on this host. Videos are validated first
(input_pipeline/validation.py); with `dataset.skip_invalid` the invalid ones
are left out and listed in `{data_dir}/validation_report.json`.

  python -m input_pipeline.prepare --config=configs/lavdf.py \
      --config.dataset.root=/data/lavdf --config.dataset.record_dtype=float16
"""

import bisect
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
from typing import Optional, Sequence, Union
import uuid

from array_record.python import array_record_module
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import formats
from input_pipeline import pipeline
from input_pipeline import record_file
from input_pipeline import tfds_builder

# Written last into a finished preparation: its settings and what validation
# left out. A directory without it is never read.
MARKER = 'PREPARED.json'
_TMP_INFIX = '.tmp-'
# ArrayRecordReader's documented options for random access (no read-ahead,
# no reader threads): training reads records in a shuffled order.
_READER_OPTIONS = 'readahead_buffer_size:0,max_parallelism:0'


def record_dtype(config: ml_collections.ConfigDict) -> str:
  """`dataset.record_dtype`: 'float32' (default), 'float16' or 'bfloat16'."""
  return config.dataset.get('record_dtype', 'float32')


def _metadata_files(name: str, root: str) -> list[str]:
  if name == 'avdeepfake1m':
    return [f'{root}/{split}_metadata.json'
            for split in tfds_builder.DATASET_SPLITS[name]]
  return [f'{root}/metadata.json']


def source_fields(config: ml_collections.ConfigDict) -> dict:
  """The run's values of `tfds_builder.SOURCE_FIELDS` (those it sets)."""
  return {k: config.dataset[k] for k in tfds_builder.SOURCE_FIELDS
          if k in config.dataset}


def prepared_settings(config: ml_collections.ConfigDict, root: str) -> dict:
  """Everything that determines the prepared content (hashed into its name).

  The metadata files count by size and modification time, so an edited
  metadata file prepares anew (a feature file changed in place does not).
  """
  ds = config.dataset
  metadata = {}
  for path in _metadata_files(ds.name, root):
    if tf.io.gfile.exists(path):
      stat = tf.io.gfile.stat(path)
      metadata[os.path.basename(path)] = [stat.length, stat.mtime_nsec]
  return {
      'format_version': tfds_builder.FORMAT_VERSION,
      'builder_version': tfds_builder.DATASET_VERSION,
      'dataset': ds.name,
      'root': root if '://' in root else os.path.abspath(root),
      'metadata': metadata,
      'source': source_fields(config),
      'record_dtype': record_dtype(config),
  }


def prepared_path(config: ml_collections.ConfigDict, root: str) -> str:
  """Where `ensure_prepared` puts (or finds) the prepared data."""
  settings = prepared_settings(config, root)
  digest = hashlib.sha256(
      json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
  base = config.dataset.get('prepared_dir', '') or f'{root}/prepared'
  return f'{base.rstrip("/")}/{config.dataset.name}-{digest}'


def _read_marker(data_dir: str) -> Optional[dict]:
  path = f'{data_dir}/{MARKER}'
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def _check_reusable(data_dir: str, marker: dict, skip_invalid: bool):
  excluded = marker.get('excluded_files', [])
  if excluded and not skip_invalid:
    raise ValueError(
        f'{data_dir}: this preparation left out {len(excluded)} invalid '
        f'videos (e.g. {excluded[0]}; see '
        f'{data_dir}/{tfds_builder.VALIDATION_REPORT}), but '
        'dataset.skip_invalid is False. Set dataset.skip_invalid=True to '
        'train without them, or fix the data and delete the directory.')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale_tmp_dirs(base: str):
  """Deletes temporary preparations whose preparer on this host is dead.

  Names are `{final}.tmp-{host}-{pid}-{uuid}`; those of other hosts, or of
  live processes, are left alone (never read either way).
  """
  host = socket.gethostname()
  for name in os.listdir(base):
    if _TMP_INFIX not in name:
      continue
    owner = name.rsplit(_TMP_INFIX, 1)[1].rsplit('-', 2)
    if len(owner) != 3 or owner[0] != host or not owner[1].isdigit():
      continue
    if not _pid_alive(int(owner[1])):
      logging.warning('Removing %s, left by an interrupted preparation.',
                      f'{base}/{name}')
      shutil.rmtree(f'{base}/{name}', ignore_errors=True)


def _build(data_dir: str, config: ml_collections.ConfigDict, root: str,
           settings: dict):
  """Builds the TFDS dataset into `data_dir` and writes the marker last."""
  ds = config.dataset
  builder = tfds_builder.WmmtFeatures(
      config=tfds_builder.config_name(ds.name, record_dtype(config)),
      data_dir=data_dir,
      source_options=tfds_builder.SourceOptions(
          dataset_config=source_fields(config),
          skip_invalid=ds.get('skip_invalid', False),
          report_path=f'{data_dir}/{tfds_builder.VALIDATION_REPORT}'))
  downloads = f'{data_dir}/downloads'
  builder.download_and_prepare(
      download_dir=downloads,
      download_config=tfds.download.DownloadConfig(
          manual_dir=root, try_download_gcs=False,
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  if tf.io.gfile.exists(downloads):
    tf.io.gfile.rmtree(downloads)
  metadata = builder.info.metadata
  marker = dict(
      settings, config_name=builder.builder_config.name,
      excluded_files=metadata['excluded_files'],
      splits={s: len(v['length']) for s, v in metadata['splits'].items()})
  with tf.io.gfile.GFile(f'{data_dir}/{MARKER}', 'w') as f:
    f.write(json.dumps(marker, indent=1))


def ensure_prepared(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Prepares `config.dataset` unless a complete preparation exists.

  Args:
    config: reads `dataset.name`, `dataset.root` (the synthetic dataset is
      written first, as in training), `dataset.layout`, `visual_dim`,
      `audio_dim`, `audio_align`, and `dataset.record_dtype` ('float32'),
      `dataset.prepared_dir` ('' = `{root}/prepared`) and
      `dataset.skip_invalid` (False).
    workdir: where the synthetic dataset goes when `dataset.root` is empty.

  Returns:
    The TFDS data dir of the prepared dataset (see the module docstring).

  Raises:
    ValueError: invalid videos (unless `dataset.skip_invalid`), or a reused
      preparation that left videos out while `skip_invalid` is False.
  """
  root = pipeline.dataset_root(config, workdir)
  skip_invalid = config.dataset.get('skip_invalid', False)
  final = prepared_path(config, root)
  marker = _read_marker(final)
  if marker is not None:
    _check_reusable(final, marker, skip_invalid)
    return final
  settings = prepared_settings(config, root)
  base = os.path.dirname(final)
  logging.info('Preparing %s into %s.', root, final)
  if '://' in final:
    # Object stores have no atomic rename: build in place, marker last; a
    # directory without the marker is an interrupted build, rebuilt here.
    if tf.io.gfile.exists(final):
      tf.io.gfile.rmtree(final)
    _build(final, config, root, settings)
    return final
  os.makedirs(base, exist_ok=True)
  _remove_stale_tmp_dirs(base)
  tmp = (f'{final}{_TMP_INFIX}{socket.gethostname()}-{os.getpid()}-'
         f'{uuid.uuid4().hex[:8]}')
  try:
    _build(tmp, config, root, settings)
    try:
      os.rename(tmp, final)
    except OSError:
      # Another preparer finished first; its result is the same.
      if _read_marker(final) is None:
        raise RuntimeError(
            f'{final} exists but has no {MARKER}, so it was not written by '
            'ensure_prepared or was damaged; delete it to prepare '
            'again.') from None
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  _check_reusable(final, _read_marker(final), skip_invalid)
  return final


def _version_dir(data_dir: str) -> str:
  """The one `wmmt_features/{config}/{version}` directory of a data dir."""
  dirs = tf.io.gfile.glob(f'{data_dir}/{tfds_builder.NAME}/*/*/'
                          'dataset_info.json')
  if len(dirs) != 1:
    raise ValueError(f'{data_dir}: expected one prepared dataset '
                     f'({tfds_builder.NAME}/<config>/<version>), found '
                     f'{len(dirs)}.')
  return os.path.dirname(dirs[0])


class PreparedSource(pipeline.FeatureSource):
  """A split of a prepared dataset, read by random access.

  Lengths, labels and every record field come from the dataset's metadata,
  so planning and subset selection read no example. Local shards are read
  through their index (`record_file.RecordFile`): `load_into` reads the
  frames a batch needs with one `preadv` per video and feature, no file
  opens; shards without one (remote, or written by other means) through
  ArrayRecordReader.
  """

  # Reads are memory-bandwidth bound; more threads than a few per core only
  # contend.
  load_threads = 4

  def __init__(self, data_dir: str, split: str,
               records: Optional[Sequence[formats.VideoRecord]] = None,
               skip_missing: bool = False):
    """Opens one split.

    Args:
      data_dir: a prepared data dir (`ensure_prepared`'s result).
      split: e.g. 'train'.
      records: the videos to read, in this order (e.g. a subset of the
        split); each is found by its `file`. None = the whole split.
      skip_missing: leave out `records` the prepared data lacks (those
        validation left out with `dataset.skip_invalid`) instead of raising.
    """
    builder = tfds.builder_from_directory(_version_dir(data_dir))
    info = builder.info
    metadata = info.metadata
    if metadata.get('format_version') != tfds_builder.FORMAT_VERSION:
      raise ValueError(
          f'{data_dir}: prepared with format version '
          f'{metadata.get("format_version")}, this code reads '
          f'{tfds_builder.FORMAT_VERSION}; delete it to prepare again.')
    if split not in metadata['splits']:
      raise ValueError(f'{data_dir}: no split {split!r} in the prepared data '
                       f'(it has {sorted(metadata["splits"])}).')
    index = metadata['splits'][split]
    if records is None:
      records = tfds_builder.records_from_index(index, split)
      positions = np.arange(len(records))
    else:
      where = {f: i for i, f in enumerate(tfds_builder.index_files(index))}
      missing = [r.file for r in records if r.file not in where]
      if missing and skip_missing:
        logging.warning(
            'Leaving out %d of the %d %r videos that validation left out '
            '(listed in %s/%s).', len(missing), len(records), split,
            data_dir, tfds_builder.VALIDATION_REPORT)
        records = [r for r in records if r.file in where]
      elif missing:
        raise ValueError(
            f'{data_dir}: {len(missing)} of the {len(records)} requested '
            f'{split!r} videos are not in the prepared data, e.g. '
            f'{missing[0]} (left out by validation? see '
            f'{data_dir}/{tfds_builder.VALIDATION_REPORT}).')
      positions = np.array([where[r.file] for r in records], np.int64)
    self.records = list(records)
    self._positions = positions
    self._lengths = np.asarray(index['length'], np.int64)[positions]
    self.dtype = np.dtype(tfds_builder.RECORD_DTYPES[metadata['record_dtype']])
    self.visual_dim = metadata['visual_dim']
    self.audio_dim = metadata['audio_dim']
    instructions = info.splits[split].file_instructions
    self._files = [fi.filename for fi in instructions]
    self._skips = [fi.skip for fi in instructions]
    self._ends = np.cumsum([fi.take for fi in instructions]).tolist()
    self._readers = [None] * len(self._files)
    self._lock = threading.Lock()

  def _reader(self, shard: int):
    """The shard's reader: a `record_file.RecordFile` where the shard has
    its index (local files), else an ArrayRecordReader."""
    reader = self._readers[shard]
    if reader is None:
      with self._lock:
        if self._readers[shard] is None:
          path = os.fspath(self._files[shard])
          end = self._ends[shard] - (self._ends[shard - 1] if shard else 0)
          self._readers[shard] = record_file.RecordFile.open(
              path, self._skips[shard] + end,
              len(tfds_builder.FEATURE_BYTES_KEYS)) or array_record_reader(
                  path)
        reader = self._readers[shard]
    return reader

  def _locate(self, i: int):
    """(reader, record index in its shard) of video i."""
    position = int(self._positions[i])
    shard = bisect.bisect_right(self._ends, position)
    start = self._ends[shard - 1] if shard else 0
    return self._reader(shard), position - start + self._skips[shard]

  def read(self, i: int) -> Union[bytes, np.ndarray]:
    """The serialized example of video i (bytes, or a uint8 array)."""
    return _read_record(*self._locate(i))

  def length(self, i: int) -> int:
    return int(self._lengths[i])

  def lengths(self) -> np.ndarray:
    return self._lengths.copy()

  def _damaged(self, i: int, what: str) -> ValueError:
    return ValueError(f'{self.records[i].file}: its prepared record {what}; '
                      'the prepared data is damaged, delete it to prepare '
                      'again.')

  def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Video i's features: read-only views of one record read, no copy."""
    reader, record = self._locate(i)
    serialized = _read_record(reader, record)
    keys = tfds_builder.FEATURE_BYTES_KEYS
    if isinstance(reader, record_file.RecordFile):
      fields = {k: reader.feature(record, n) for n, k in enumerate(keys)}
    else:
      fields = record_file.example_bytes_features(serialized, keys)
    out = []
    for key, dim in zip(keys, (self.visual_dim, self.audio_dim)):
      if key not in fields:
        raise self._damaged(i, f'has no {key!r} bytes')
      offset, size = fields[key]
      x = np.frombuffer(serialized, self.dtype, size // self.dtype.itemsize,
                        offset)
      out.append(x.reshape(-1, dim))
    if not out[0].shape[0] == out[1].shape[0] == self._lengths[i]:
      raise self._damaged(
          i, f'has {out[0].shape[0]} visual and {out[1].shape[0]} audio '
          f'frames, but the metadata says {self._lengths[i]}')
    return out[0], out[1]

  def load_into(self, i, frames_for, visual_out, audio_out) -> int:
    """See `FeatureSource.load_into`. With a `RecordFile`: reads only the
    rows from the first frame to the last; consecutive frames (evaluation,
    'crop') land in the outputs straight from the file, others go through
    one buffer and `np.take`."""
    reader, record = self._locate(i)
    if not isinstance(reader, record_file.RecordFile):
      return super().load_into(i, frames_for, visual_out, audio_out)
    length = int(self._lengths[i])
    frames = np.asarray(frames_for(length))
    n = len(frames)
    if not n:
      return 0
    first, last = int(frames.min()), int(frames.max())
    if first < 0 or last >= length:
      raise ValueError(f'{self.records[i].file}: frames {first}..{last} '
                       f'asked of a video of {length}.')
    span = last - first + 1
    consecutive = span == n and (n == 1 or bool((np.diff(frames) == 1).all()))
    itemsize = self.dtype.itemsize
    for k, (dim, out) in enumerate(((self.visual_dim, visual_out),
                                    (self.audio_dim, audio_out))):
      size = reader.feature(record, k)[1]
      if size != length * dim * itemsize:
        raise self._damaged(i, f'has {size} bytes of feature {k}, expected '
                            f'{length} frames x {dim} x {itemsize}')
      row = dim * itemsize
      if consecutive:
        reader.read_feature(record, k, first * row, out[:n])
      else:
        rows = np.empty((span, dim), self.dtype)
        reader.read_feature(record, k, first * row, rows)
        np.take(rows, frames - first, axis=0, out=out[:n], mode='clip')
    return n


def _read_record(reader, record: int) -> Union[bytes, np.ndarray]:
  """Record `record` of a shard through either kind of reader."""
  if isinstance(reader, record_file.RecordFile):
    return reader.read(record)
  return reader.read([record])[0]


def array_record_reader(path: str):
  """A thread-safe ArrayRecord reader set up for random access."""
  return array_record_module.ArrayRecordReader(path, _READER_OPTIONS)


def create_source(config: ml_collections.ConfigDict, workdir: str,
                  split: str, records: Sequence[formats.VideoRecord],
                  root: str) -> pipeline.FeatureSource:
  """The pipelines' source for `records` of `split`.

  `dataset.use_prepared` (default False): prepared ArrayRecords
  (`ensure_prepared`, built on first use); else the `.npy` files under
  `root`.
  """
  if not config.dataset.get('use_prepared', False):
    return pipeline.NpySource(config, records, root)
  return PreparedSource(ensure_prepared(config, workdir), split, records,
                        skip_missing=config.dataset.get('skip_invalid',
                                                        False))


def main(argv):
  """Prepares `--config`'s dataset and prints its data dir."""
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  # pylint: disable-next=g-import-not-at-top
  from absl import flags
  tf.config.set_visible_devices([], 'GPU')
  print(ensure_prepared(flags.FLAGS.config, flags.FLAGS.workdir))


if __name__ == '__main__':
  # Flags only here: training imports this module beside its own flags.
  # pylint: disable=g-import-not-at-top
  from absl import app
  from absl import flags as absl_flags
  from ml_collections import config_flags
  # pylint: enable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  lock_config=True)
  absl_flags.DEFINE_string('workdir', '', 'Where the synthetic dataset goes '
                           'when dataset.root is empty.')
  absl_flags.mark_flags_as_required(['config'])
  app.run(main)
