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
from typing import Optional, Sequence
import uuid

from array_record.python import array_record_module
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import formats
from input_pipeline import pipeline
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
  so planning and subset selection read no example; `load` reads one
  ArrayRecord record per video (no file opens) and copies nothing.
  """

  # Record reads are CPU bound (decoding); more threads than a few per core
  # only contend.
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
    reader = self._readers[shard]
    if reader is None:
      with self._lock:
        if self._readers[shard] is None:
          self._readers[shard] = array_record_reader(self._files[shard])
        reader = self._readers[shard]
    return reader

  def read(self, i: int) -> bytes:
    """The serialized example of video i."""
    position = int(self._positions[i])
    shard = bisect.bisect_right(self._ends, position)
    start = self._ends[shard - 1] if shard else 0
    return self._reader(shard).read([position - start + self._skips[shard]])[0]

  def length(self, i: int) -> int:
    return int(self._lengths[i])

  def lengths(self) -> np.ndarray:
    return self._lengths.copy()

  def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Video i's features: read-only views of one record, no copy."""
    serialized = self.read(i)
    fields = example_bytes_features(serialized, _FEATURE_KEYS)
    out = []
    for key, dim in zip(_FEATURE_KEYS, (self.visual_dim, self.audio_dim)):
      if key not in fields:
        raise ValueError(f'{self.records[i].file}: its prepared record has '
                         f'no {key!r} bytes; the prepared data is damaged, '
                         'delete it to prepare again.')
      offset, size = fields[key]
      x = np.frombuffer(serialized, self.dtype, size // self.dtype.itemsize,
                        offset)
      out.append(x.reshape(-1, dim))
    if not out[0].shape[0] == out[1].shape[0] == self._lengths[i]:
      raise ValueError(
          f'{self.records[i].file}: prepared features of {out[0].shape[0]} '
          f'visual and {out[1].shape[0]} audio frames, but the metadata says '
          f'{self._lengths[i]}; the prepared data is damaged, delete it to '
          'prepare again.')
    return out[0], out[1]


# The TFDS serialized names of the two feature tensors' bytes.
_FEATURE_KEYS = ('visual/value', 'audio/value')


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7


def _fields(buf: bytes, start: int, end: int):
  """(field number, value start, value end) of a message's length-delimited
  fields (protobuf wire format); other wire types are skipped."""
  pos = start
  while pos < end:
    key, pos = _varint(buf, pos)
    wire = key & 7
    if wire == 2:
      size, pos = _varint(buf, pos)
      yield key >> 3, pos, pos + size
      pos += size
    elif wire == 0:
      _, pos = _varint(buf, pos)
    elif wire in (1, 5):
      pos += 8 if wire == 1 else 4
    else:
      raise ValueError(f'not a serialized tf.train.Example (wire type '
                       f'{wire} at byte {pos}).')


def example_bytes_features(serialized: bytes,
                           keys: Sequence[str]) -> dict[str, tuple[int, int]]:
  """(offset, size) of the first bytes value of each named feature.

  Walks the tf.train.Example wire format (Example.features = 1;
  Features.feature = 1, map entries of key = 1, value = 2; Feature.bytes_list
  = 1; BytesList.value = 1) without copying the values: the features of a
  real-width video are megabytes, and parsing the message would copy them
  twice. Keys not found (or without bytes) are left out.
  """
  wanted = {k.encode(): k for k in keys}
  out = {}
  for field, start, end in _fields(serialized, 0, len(serialized)):
    if field != 1:
      continue
    for entry_field, entry_start, entry_end in _fields(serialized, start, end):
      if entry_field != 1:
        continue
      key = value = None
      for f, s, e in _fields(serialized, entry_start, entry_end):
        if f == 1:
          key = serialized[s:e]
        elif f == 2:
          value = (s, e)
      if key not in wanted or value is None:
        continue
      for f, s, e in _fields(serialized, *value):
        if f == 1:  # bytes_list
          for g, vs, ve in _fields(serialized, s, e):
            if g == 1:
              out[wanted[key]] = (vs, ve - vs)
              break
  return out


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
