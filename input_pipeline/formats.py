"""On-disk formats: LAV-DF metadata, feature files and audio alignment.

Everything here is plain numpy plus `tf.io.gfile`, so paths may be local or
`gs://`. The tf.data code in `pipeline.py` calls these functions through
`tf.numpy_function`, so errors raised here reach the user with the file name.
"""

import dataclasses
import io
import json
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

# Video-level classes (DESIGN.md section 1).
LABEL_REAL = 0
LABEL_BOTH = 1
LABEL_VISUAL = 2
LABEL_AUDIO = 3
NUM_CLASSES = 4


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """Metadata of one video.

  Attributes:
    file: path relative to the dataset, e.g. "train/000001.mp4"; the key of
      predictions and of the reference evaluators.
    video_id: `file`'s name without directory and extension, e.g. "000001";
      names the feature files.
    split: "train", "dev" or "test".
    label: 0 both real, 1 both forged, 2 visual only, 3 audio only.
    duration: seconds.
    video_frames: number of video frames.
    fps: video_frames / duration (how MDP converts frames to seconds).
    fake_segments: `[N, 2]` float32 seconds, all fake periods (the evaluation
      ground truth).
    visual_segments: `[N_v, 2]` float32 seconds where the visual track is
      forged (empty if it is not modified).
    audio_segments: `[N_a, 2]` float32 seconds where the audio is forged.
  """
  file: str
  video_id: str
  split: str
  label: int
  duration: float
  video_frames: int
  fps: float
  # Arrays do not compare with `==`; records compare by their scalars.
  fake_segments: np.ndarray = dataclasses.field(compare=False, repr=False)
  visual_segments: np.ndarray = dataclasses.field(compare=False, repr=False)
  audio_segments: np.ndarray = dataclasses.field(compare=False, repr=False)


def label_from_modified(modify_video: bool, modify_audio: bool) -> int:
  """Video-level class from which modalities were modified."""
  if modify_video and modify_audio:
    return LABEL_BOTH
  if modify_video:
    return LABEL_VISUAL
  if modify_audio:
    return LABEL_AUDIO
  return LABEL_REAL


def _video_id(file: str) -> str:
  """'train/000001.mp4' -> '000001' (os.path.splitext is slow on 136k)."""
  name = file.rpartition('/')[2]
  stem, dot, _ = name.rpartition('.')
  return stem if dot and stem else name


def _is_number(x) -> bool:
  # `type` rather than isinstance: bool is an int subclass, and
  # `"duration": true` is a malformed entry.
  return type(x) in (int, float)  # pylint: disable=unidiomatic-typecheck


def _is_segment(seg) -> bool:
  # pylint: disable-next=unidiomatic-typecheck
  return (type(seg) is list and len(seg) == 2 and _is_number(seg[0]) and
          _is_number(seg[1]) and 0 <= seg[0] <= seg[1] < math.inf)


# (key, check, what is expected), in the order they are reported.
_LAVDF_FIELDS = (
    ('file', lambda v: type(v) is str and v, 'a non-empty string'),
    ('split', lambda v: type(v) is str and v, 'a non-empty string'),
    ('duration', lambda v: _is_number(v) and 0 < v < math.inf,
     'a number > 0 (seconds)'),
    ('video_frames', lambda v: type(v) is int and v > 0, 'an integer > 0'),
    ('modify_video', lambda v: type(v) is bool, 'a bool'),
    ('modify_audio', lambda v: type(v) is bool, 'a bool'),
    ('n_fakes', lambda v: type(v) is int and v >= 0, 'an integer >= 0'),
    ('fake_periods',
     lambda v: type(v) is list and all(_is_segment(seg) for seg in v),
     'a list of [start, end] pairs of numbers with 0 <= start <= end'),
)


def _is_valid_entry(entry) -> bool:
  """Fast check of one metadata entry; `_entry_error` explains a failure."""
  try:
    file, split = entry['file'], entry['split']
    duration, frames = entry['duration'], entry['video_frames']
    modify_video, modify_audio = entry['modify_video'], entry['modify_audio']
    n_fakes, periods = entry['n_fakes'], entry['fake_periods']
  except (KeyError, TypeError, IndexError):
    return False
  # pylint: disable=unidiomatic-typecheck
  return (type(file) is str and bool(file) and type(split) is str and
          bool(split) and _is_number(duration) and 0 < duration < math.inf and
          type(frames) is int and frames > 0 and
          type(modify_video) is bool and type(modify_audio) is bool and
          type(n_fakes) is int and type(periods) is list and
          n_fakes == len(periods) and
          (modify_video or modify_audio) == (n_fakes > 0) and
          all(_is_segment(seg) for seg in periods))


def _entry_error(entry) -> str:
  """What is wrong with an entry that failed `_is_valid_entry`."""
  if not isinstance(entry, dict):
    return f'expected a JSON object, got {type(entry).__name__}.'
  for key, check, expected in _LAVDF_FIELDS:
    if key not in entry:
      return f'missing key {key!r} (expected {expected}).'
    if not check(entry[key]):
      return f'key {key!r}: expected {expected}, got {entry[key]!r:.200}.'
  n_segments = len(entry['fake_periods'])
  if entry['n_fakes'] != n_segments:
    return (f"key 'n_fakes' is {entry['n_fakes']} but 'fake_periods' has "
            f'{n_segments} segments; expected them to agree.')
  if n_segments:
    return (f"key 'fake_periods' has {n_segments} segments but neither "
            "'modify_video' nor 'modify_audio' is true; expected none for a "
            'real video.')
  return ("key 'fake_periods' is empty but 'modify_video' or 'modify_audio' "
          'is true; expected at least one [start, end] segment for a fake '
          'video.')


def _read_bytes(path: str, kind: str) -> bytes:
  """The whole file through tf.io.gfile; a missing one names `path`."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: {kind} file not found.') from e


def read_lavdf_metadata(
    path: str, splits: Optional[Sequence[str]] = None) -> list[VideoRecord]:
  """Reads a LAV-DF `metadata.json` (DESIGN.md section 4).

  Args:
    path: the JSON file, local or `gs://`.
    splits: keep only entries whose `split` is one of these; None keeps all.

  Returns:
    The records in file order. Entries of other splits are checked only for
    their `split` key.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not JSON, not a list, or an entry is malformed;
      the message names the file, the entry index, the key and what was
      expected.
  """
  text = _read_bytes(path, 'metadata')
  try:
    entries = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON: {e}') from e
  if not isinstance(entries, list):
    raise ValueError(f'{path}: expected a JSON list of video entries, got '
                     f'{type(entries).__name__}.')

  def fail(i, entry):
    file = entry.get('file') if isinstance(entry, dict) else None
    where = f'entry {i}' + (f' ({file})' if isinstance(file, str) else '')
    raise ValueError(f'{path}: {where}: {_entry_error(entry)}')

  if isinstance(splits, str):
    raise TypeError(f'read_lavdf_metadata: splits must be a list of split '
                    f'names, e.g. [{splits!r}], got the string {splits!r}.')
  keep = None if splits is None else frozenset(splits)
  kept = []
  periods = []  # All segments of the kept entries, converted at once.
  for i, entry in enumerate(entries):
    if keep is not None:
      split = entry.get('split') if isinstance(entry, dict) else None
      if isinstance(split, str) and split not in keep:
        continue
    if not _is_valid_entry(entry):
      fail(i, entry)
    kept.append(entry)
    periods.extend(entry['fake_periods'])
  flat = np.asarray(periods, np.float32).reshape(-1, 2)
  flat.flags.writeable = False
  records = []
  offset = 0
  for entry in kept:
    n = entry['n_fakes']
    segments = flat[offset:offset + n]
    offset += n
    file, duration = entry['file'], float(entry['duration'])
    modify_video, modify_audio = entry['modify_video'], entry['modify_audio']
    records.append(VideoRecord(
        file=file,
        video_id=_video_id(file),
        split=entry['split'],
        label=label_from_modified(modify_video, modify_audio),
        duration=duration,
        video_frames=entry['video_frames'],
        fps=entry['video_frames'] / duration,
        fake_segments=segments,
        visual_segments=segments if modify_video else flat[:0],
        audio_segments=segments if modify_audio else flat[:0]))
  return records


def feature_paths(root: str, layout: str, split: str,
                  video_id: str) -> tuple[str, str]:
  """Paths of one video's (visual, audio) feature files.

  Args:
    root: dataset root, local or `gs://`.
    layout: 'mdp' = `{root}/feats/tsn/rgb/{split}/{id}.npy` and
      `{root}/feats/audio_context/{split}/{id}.npy` (MDP's reader);
      'generic' = `{root}/visual/{id}.npy` and `{root}/audio/{id}.npy`.
    split: the record's split.
    video_id: file name without extension.

  Returns:
    (visual_path, audio_path).
  """
  root = root.rstrip('/') or '/'
  if layout == 'mdp':
    return (f'{root}/feats/tsn/rgb/{split}/{video_id}.npy',
            f'{root}/feats/audio_context/{split}/{video_id}.npy')
  if layout == 'generic':
    return f'{root}/visual/{video_id}.npy', f'{root}/audio/{video_id}.npy'
  raise ValueError(f"dataset.layout: unknown layout {layout!r}; expected "
                   "'mdp' or 'generic'.")


def _read_npy(path: str) -> np.ndarray:
  data = _read_bytes(path, 'feature')
  try:
    # One read and an in-memory parse: cheap locally, one request on GCS.
    return np.load(io.BytesIO(data), allow_pickle=False)
  except ValueError as e:
    raise ValueError(f'{path}: not a readable .npy array: {e}') from e


def _check_features(x: np.ndarray, path: str, dim: int,
                    key: str) -> np.ndarray:
  """Validates a loaded `[T, D]` feature array; returns it as float32."""
  if x.ndim != 2:
    raise ValueError(f'{path}: expected a 2-D [time, {dim}] feature array, '
                     f'got shape {x.shape}.')
  if not (np.issubdtype(x.dtype, np.floating) or
          np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f'{path}: expected numeric features, got dtype '
                     f'{x.dtype}.')
  if x.shape[1] != dim:
    raise ValueError(f'{path}: feature width is {x.shape[1]} but {key} = '
                     f'{dim}; set {key} to the width of the features.')
  if x.shape[0] == 0:
    raise ValueError(f'{path}: zero-length feature array (shape {x.shape}).')
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    bad = np.argwhere(~np.isfinite(x))[0]
    raise ValueError(f'{path}: features contain NaN or Inf (first at time '
                     f'{bad[0]}, channel {bad[1]}).')
  return x


def load_features(visual_path: str, audio_path: str, visual_dim: int,
                  audio_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Loads and validates one video's features.

  Args:
    visual_path: `.npy` file of `[T_v, visual_dim]` features.
    audio_path: `.npy` file of `[T_a, audio_dim]` features.
    visual_dim: expected width (`dataset.visual_dim`).
    audio_dim: expected width (`dataset.audio_dim`).

  Returns:
    visual `[T_v, Dv]` float32, audio `[T_a, Da]` float32, at their native
    rates.

  Raises:
    FileNotFoundError / ValueError naming the file: missing, not 2-D, wrong
    width, zero length, NaN or Inf.
  """
  visual = _check_features(_read_npy(visual_path), visual_path, visual_dim,
                           'dataset.visual_dim')
  audio = _check_features(_read_npy(audio_path), audio_path, audio_dim,
                          'dataset.audio_dim')
  return visual, audio


def read_npy_shape(path: str) -> tuple[int, ...]:
  """Shape of a `.npy` file from its header, without reading the data."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
      elif version == (2, 0):
        shape, _, _ = np.lib.format.read_array_header_2_0(f)
      else:
        # Version 3 headers only differ in their encoding; rare enough to
        # parse the whole file.
        return _read_npy(path).shape
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: feature file not found.') from e
  except ValueError as e:
    raise ValueError(f'{path}: not a readable .npy array: {e}') from e
  return tuple(shape)


def align_audio(audio: np.ndarray, num_frames: int,
                method: str) -> np.ndarray:
  """Resamples audio features in time to the visual length.

  Args:
    audio: `[T_a, D]` features.
    num_frames: the visual length T.
    method: 'avg_pool' = torch `adaptive_avg_pool1d` over time (MDP): output
      i averages input `[floor(i T_a / T), ceil((i + 1) T_a / T))`, also for
      T_a < T; 'linear' = torch `interpolate(mode='linear',
      align_corners=False)` (UMMAFormer).

  Returns:
    `[T, D]` float32.
  """
  audio = np.asarray(audio)
  if audio.ndim != 2 or audio.shape[0] == 0:
    raise ValueError(f'align_audio: expected a non-empty [T_a, D] array, got '
                     f'shape {audio.shape}.')
  if num_frames <= 0:
    raise ValueError(f'align_audio: num_frames must be > 0, got {num_frames}.')
  t_in = audio.shape[0]
  i = np.arange(num_frames, dtype=np.int64)
  if method == 'avg_pool':
    start = (i * t_in) // num_frames
    end = ((i + 1) * t_in + num_frames - 1) // num_frames
    # float64 prefix sums: each bin mean is a difference of two sums, exact to
    # float32 precision for any realistic length.
    csum = np.zeros((t_in + 1, audio.shape[1]), np.float64)
    np.cumsum(audio, axis=0, dtype=np.float64, out=csum[1:])
    out = (csum[end] - csum[start]) / (end - start)[:, None]
  elif method == 'linear':
    # align_corners=False: output centres map to input centres; torch clamps
    # negative source positions to 0 and repeats the last frame at the end.
    src = np.maximum((i + 0.5) * (t_in / num_frames) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), t_in - 1)
    hi = np.minimum(lo + 1, t_in - 1)
    w = (src - lo)[:, None]
    x = audio.astype(np.float64, copy=False)
    out = (1.0 - w) * x[lo] + w * x[hi]
  else:
    raise ValueError(f"dataset.audio_align: unknown method {method!r}; "
                     "expected 'avg_pool' or 'linear'.")
  return out.astype(np.float32)
