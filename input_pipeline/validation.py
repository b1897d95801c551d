"""Validation of a dataset's metadata and feature files before preparation.

`validate_dataset` checks the records of one or more splits against the
feature files of `dataset.layout` and lists every problem it finds, each
naming the file and what was expected:

- `duplicate_id`: two records with the same `file`, or two that would read
  the same feature file (the same video id in one split, or in any split for
  the 'generic' layout, which has no split directories);
- `segment_outside`: a fake, visual or audio segment with start < 0,
  start > end or end > duration + `dataset.segment_tolerance_s`;
- `missing_feature`: a record without one of its feature files;
- `unreadable`, `wrong_shape`, `wrong_dtype`, `wrong_width`, `empty`,
  `non_finite`: a feature file that `formats.load_video_features` would
  reject (every value is read, to find NaN and Inf);
- `length_mismatch`: a visual length far from `video_frames`, an audio length
  far from the visual length times `dataset.audio_rate / fps`, or flow
  features of another length than the rgb ones;
- `orphan_feature`: a feature file in the layout's directories of these
  splits that no record names.

`check_or_skip` then stops with the list, or, with `dataset.skip_invalid`,
writes it to a file and lets the caller leave out `report.bad_files`.
"""

import collections
from concurrent import futures
import dataclasses
import json
import os
from typing import Optional, Sequence
import uuid

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import formats

# Threads reading feature files: I/O bound, and numpy releases the GIL.
_NUM_THREADS = 16
# Files checked per batch of thread-pool work (bounds the pending futures).
_BATCH = 4096
# Frames a length may be off on top of `dataset.length_tolerance` (rounding
# at both ends of a video).
_LENGTH_SLACK_FRAMES = 2
_SEGMENT_FIELDS = ('fake_segments', 'visual_segments', 'audio_segments')
_NO_SEGMENTS = np.zeros((0, 2))
# Log progress every this many feature files.
_LOG_EVERY = 100_000


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem of a dataset.

  Attributes:
    file: the `VideoRecord.file` at fault, or the feature path of an orphan.
    path: the offending file's path, or '' for a metadata problem.
    kind: short code, e.g. 'missing_feature' (module docstring).
    message: what is wrong and what was expected, naming the file.
  """
  file: str
  path: str
  kind: str
  message: str


@dataclasses.dataclass
class ValidationReport:
  """The problems of a dataset.

  Attributes:
    problems: all problems, in record order, orphan feature files last.
    bad_files: `VideoRecord.file` of every record with a problem: the
      videos to leave out.
    num_records: records validated.
    max_listed: problems that `summary` lists.
  """
  problems: list[Problem]
  bad_files: set[str]
  num_records: int = 0
  max_listed: int = 20

  def summary(self) -> str:
    """The count of problems by kind and the first `max_listed` of them."""
    if not self.problems:
      return (f'Dataset validation: no problems in {self.num_records} '
              'videos.')
    counts = collections.Counter(p.kind for p in self.problems)
    lines = [
        f'Dataset validation: {len(self.problems)} problems; '
        f'{len(self.bad_files)} of {self.num_records} videos have one.',
        'By kind: ' + ', '.join(f'{k} {n}' for k, n in counts.most_common()),
    ]
    listed = self.problems[:self.max_listed]
    lines.append(f'The first {len(listed)}:' if len(listed) < len(
        self.problems) else 'All of them:')
    lines += [f'  [{p.kind}] {p.message}' for p in listed]
    if len(self.problems) > len(listed):
      lines.append(f'  ... and {len(self.problems) - len(listed)} more '
                   f'({len(self.problems)} in all).')
    return '\n'.join(lines)

  def write(self, path: str):
    """Writes the full report as JSON, atomically (a temp file, renamed)."""
    data = {
        'num_records': self.num_records,
        'num_problems': len(self.problems),
        'bad_files': sorted(self.bad_files),
        'problems': [dataclasses.asdict(p) for p in self.problems],
    }
    directory = os.path.dirname(path)
    if directory:
      tf.io.gfile.makedirs(directory)
    tmp = f'{path}.tmp-{uuid.uuid4().hex}'
    try:
      with tf.io.gfile.GFile(tmp, 'w') as f:
        f.write(json.dumps(data, indent=1))
      if '://' in path:
        tf.io.gfile.rename(tmp, path, overwrite=True)
      else:
        os.replace(tmp, path)
    finally:
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.remove(tmp)


def check_or_skip(report: ValidationReport, skip: bool, report_path: str):
  """Stops on problems, or with `skip` writes them to `report_path`.

  Args:
    report: from `validate_dataset`.
    skip: `dataset.skip_invalid`: leave out `report.bad_files` instead.
    report_path: where the full report goes with `skip`.

  Raises:
    ValueError: there are problems and `skip` is False; the message is
      `report.summary()` and says how to skip.
  """
  if not report.problems:
    logging.info('%s', report.summary())
    return
  if not skip:
    raise ValueError(
        f'{report.summary()}\nFix the dataset, or set dataset.skip_invalid='
        f'True (--config.dataset.skip_invalid=True) to leave out the '
        f'{len(report.bad_files)} videos with problems; the full list is '
        f'then written to {report_path}.')
  report.write(report_path)
  logging.warning(
      'Dataset validation: %d problems; leaving out %d of %d videos '
      '(dataset.skip_invalid = True). The full list is in %s.',
      len(report.problems), len(report.bad_files), report.num_records,
      report_path)


def _check_file(spec: formats.FeatureSpec):
  """(shape, None) of a good feature file, else (None, (kind, message))."""
  try:
    return formats.check_feature_file(spec), None
  except FileNotFoundError as e:
    return None, ('missing_feature', str(e))
  except formats.FeatureError as e:
    return None, (e.kind, str(e))
  except (OSError, ValueError, tf.errors.OpError) as e:
    return None, ('unreadable', f'{spec.path}: cannot be read: {e}')


def _check_files(specs: Sequence[formats.FeatureSpec]) -> dict[str, tuple]:
  """`_check_file` of every distinct path, in a thread pool."""
  unique = list({s.path: s for s in specs}.values())
  results = {}
  with futures.ThreadPoolExecutor(_NUM_THREADS) as pool:
    for first in range(0, len(unique), _BATCH):
      batch = unique[first:first + _BATCH]
      for spec, result in zip(batch, pool.map(_check_file, batch)):
        results[spec.path] = result
      done = first + len(batch)
      if done // _LOG_EVERY > first // _LOG_EVERY:
        logging.info('Dataset validation: checked %d of %d feature files.',
                     done, len(unique))
  return results


def _list_ids(directory: str) -> list[tuple[str, str]]:
  """(video id, path) of every `.npy` under `directory`, recursively."""
  found = []
  if '://' in directory:
    walk = ((d, files) for d, _, files in tf.io.gfile.walk(directory))
  else:
    # os.walk reads the file types from the directory entries: no stat per
    # file, unlike gfile.walk.
    walk = ((d, files) for d, _, files in os.walk(directory))
  prefix = len(directory.rstrip('/')) + 1
  for d, files in walk:
    d = d.rstrip('/')
    for name in files:
      if name.endswith('.npy'):
        path = f'{d}/{name}'
        found.append((path[prefix:-len('.npy')], path))
  return found


def _duplicate_problems(
    records: Sequence[formats.VideoRecord],
    specs: Sequence[list[formats.FeatureSpec]]) -> list[tuple[int, Problem]]:
  """(record index, problem) of records sharing a `file` or a feature file."""
  out = []
  by_file = collections.defaultdict(list)
  for i, r in enumerate(records):
    by_file[r.file].append(i)
  for file, index in by_file.items():
    if len(index) > 1:
      for i in index:
        out.append((i, Problem(
            file, '', 'duplicate_id',
            f'{file}: {len(index)} metadata entries have this file; '
            'expected each video once.')))
  by_path = collections.defaultdict(dict)  # path -> {file: first index}
  for i, r in enumerate(records):
    by_path[specs[i][0].path].setdefault(r.file, i)
  for path, files in by_path.items():
    if len(files) > 1:
      for file, i in files.items():
        others = ', '.join(f for f in files if f != file)
        out.append((i, Problem(
            file, path, 'duplicate_id',
            f'{file}: video id {records[i].video_id!r} (split '
            f'{records[i].split!r}) is also the id of {others:.300}; all '
            f'would read {path}. Expected one video per id.')))
  return out


def _segment_problems(records: Sequence[formats.VideoRecord],
                      tolerance_s: float) -> list[tuple[int, Problem]]:
  """Segments outside [0, duration + tolerance] or with start > end."""
  out = []
  # Compared in float32, the segments' type: a segment that ends at the
  # duration is inside whatever the rounding.
  limits = (np.array([r.duration for r in records], np.float64) +
            tolerance_s).astype(np.float32)
  for name in _SEGMENT_FIELDS:
    arrays = [getattr(r, name) for r in records]
    if name != 'fake_segments':
      # Where it is the same array as fake_segments, that one is reported.
      arrays = [a if a is not r.fake_segments else _NO_SEGMENTS
                for a, r in zip(arrays, records)]
    counts = np.array([len(a) for a in arrays], np.int64)
    if not counts.sum():
      continue
    segments = np.concatenate(
        [np.asarray(a, np.float32).reshape(-1, 2) for a in arrays if len(a)])
    owner = np.repeat(np.arange(len(records)), counts)
    start, end = segments[:, 0], segments[:, 1]
    bad = ~((start >= 0) & (start <= end) & (end <= limits[owner]))
    if not bad.any():
      continue
    bad_owner = owner[bad]
    first = np.flatnonzero(bad)[np.unique(bad_owner, return_index=True)[1]]
    per_owner = collections.Counter(bad_owner.tolist())
    for k in first:
      i = int(owner[k])
      r = records[i]
      out.append((i, Problem(
          r.file, '', 'segment_outside',
          f'{r.file}: {name} [{start[k]:g}, {end[k]:g}] s is not inside the '
          f'video of {r.duration:g} s ({per_owner[i]} such segments); '
          f'expected 0 <= start <= end <= duration + {tolerance_s:g} s '
          '(dataset.segment_tolerance_s).')))
  return out


def _length_problems(record: formats.VideoRecord,
                     specs: Sequence[formats.FeatureSpec],
                     shapes: Sequence[Optional[tuple[int, ...]]],
                     audio_rate: Optional[float],
                     tolerance: float) -> list[Problem]:
  """Lengths of one record's good feature files that disagree."""
  out = []
  rgb = shapes[0]
  if rgb is None:
    return out
  t = rgb[0]
  for spec, shape in zip(specs[1:-1], shapes[1:-1]):
    if shape is not None:
      try:
        formats.check_flow_length(specs[0].path, t, spec.path, shape[0])
      except formats.FeatureError as e:
        out.append(Problem(record.file, spec.path, e.kind, str(e)))
  frames = record.video_frames
  allowed = tolerance * frames + _LENGTH_SLACK_FRAMES
  if abs(t - frames) > allowed:
    out.append(Problem(
        record.file, specs[0].path, 'length_mismatch',
        f'{specs[0].path}: {t} visual frames but {record.file} has '
        f'video_frames = {frames}; expected {frames} +- {allowed:g} '
        '(dataset.length_tolerance).'))
  audio = shapes[-1]
  if audio_rate and audio is not None:
    expected = t * audio_rate / record.fps
    allowed = tolerance * expected + _LENGTH_SLACK_FRAMES
    if abs(audio[0] - expected) > allowed:
      out.append(Problem(
          record.file, specs[-1].path, 'length_mismatch',
          f'{specs[-1].path}: {audio[0]} audio frames but {t} visual frames '
          f'at {record.fps:g} fps make {expected:g} at dataset.audio_rate = '
          f'{audio_rate:g} per second; expected {expected:g} +- '
          f'{allowed:g} (dataset.length_tolerance).'))
  return out


def _orphan_problems(root: str, dataset_config: ml_collections.ConfigDict,
                     records: Sequence[formats.VideoRecord]) -> list[Problem]:
  """Feature files of the splits' directories that no record names."""
  ids_of_split = collections.defaultdict(set)
  for r in records:
    ids_of_split[r.split].add(r.video_id)
  expected = collections.defaultdict(set)  # directory -> video ids
  splits_of = collections.defaultdict(list)  # directory -> splits
  for split in sorted(ids_of_split):
    visual_dirs, audio_dir = formats.feature_dirs(root, dataset_config, split)
    for d in (*visual_dirs, audio_dir):
      # 'generic' has one directory for all splits: their ids add up.
      expected[d] |= ids_of_split[split]
      splits_of[d].append(split)
  out = []
  for d in sorted(expected):
    ids = expected[d]
    splits = ', '.join(repr(s) for s in splits_of[d])
    for video_id, path in sorted(_list_ids(d)):
      if video_id not in ids:
        out.append(Problem(
            path, path, 'orphan_feature',
            f'{path}: feature file without metadata: no record of split '
            f'{splits} has video id {video_id!r}; expected only the '
            f"metadata's videos in {d}."))
  return out


def validate_dataset(root: str, dataset_config: ml_collections.ConfigDict,
                     records: Sequence[formats.VideoRecord], *,
                     max_listed: int = 20) -> ValidationReport:
  """Checks the records of one or more splits against their feature files.

  Reads every feature file once (header, then all values a chunk at a time,
  in a thread pool); see the module docstring for the problems found.

  Args:
    root: dataset root, local or `gs://`.
    dataset_config: `config.dataset`; reads `layout`, `visual_dim`,
      `audio_dim`, and, with their defaults, `use_flow` (False),
      `audio_rate` (features per second: the layout's, mdp 50, ummaformer
      12.5; generic: no audio length check), `length_tolerance` (0.1,
      relative, plus 2 frames) and `segment_tolerance_s` (0.1 s).
    records: the records (`formats.read_*_metadata`). For the 'generic'
      layout, whose files of all splits share one directory, pass every
      split's records, or the others' files are orphans.
    max_listed: problems the summary lists.

  Returns:
    The report; `report.bad_files` are the videos to leave out.

  Raises:
    ValueError: bad `dataset.layout`, `use_flow` or widths.
  """
  records = list(records)
  layout = dataset_config.layout
  # 0 (the config default) or absent: the layout's own rate.
  audio_rate = (dataset_config.get('audio_rate', 0.0) or
                formats.LAYOUT_AUDIO_RATES.get(layout))
  tolerance = float(dataset_config.get('length_tolerance', 0.1))
  segment_tolerance_s = float(dataset_config.get('segment_tolerance_s', 0.1))
  formats.feature_specs(root, dataset_config, 'train', 'x')  # Checks config.

  specs = [formats.feature_specs(root, dataset_config, r.split, r.video_id)
           for r in records]
  per_record = [[] for _ in records]
  for i, problem in (_duplicate_problems(records, specs) +
                     _segment_problems(records, segment_tolerance_s)):
    per_record[i].append(problem)
  results = _check_files([s for record_specs in specs for s in record_specs])
  for i, (record, record_specs) in enumerate(zip(records, specs)):
    shapes = []
    for spec in record_specs:
      shape, error = results[spec.path]
      shapes.append(shape)
      if error:
        kind, message = error
        if kind == 'missing_feature':
          message = (f'{spec.path}: feature file not found; expected it for '
                     f'{record.file} (dataset.layout = {layout!r}).')
        per_record[i].append(Problem(record.file, spec.path, kind, message))
    per_record[i] += _length_problems(record, record_specs, shapes,
                                      audio_rate, tolerance)
  problems = [p for record_problems in per_record for p in record_problems]
  bad_files = {records[i].file for i, p in enumerate(per_record) if p}
  problems += _orphan_problems(root, dataset_config, records)
  return ValidationReport(problems=problems, bad_files=bad_files,
                          num_records=len(records), max_listed=max_listed)
