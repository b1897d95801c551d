"""On-disk formats: metadata, feature layouts, feature files, audio alignment.

Metadata: LAV-DF's `metadata.json` and AV-Deepfake1M's `{train,val}_metadata
.json` (DESIGN.md section 4), streamed entry by entry so that a million
entries take the memory of their records, not of the JSON text and objects.

Feature layouts (`dataset.layout`), `{id}` = `VideoRecord.video_id`:
- 'mdp': `feats/tsn/rgb/{split}/{id}.npy` `[T, 2048]` and
  `feats/audio_context/{split}/{id}.npy` `[T_a, 1024]` (50 per second);
- 'ummaformer': `feats/tsn/rgb/{split}/{id}.npy` `[T, 2048]`, with
  `dataset.use_flow` also `feats/tsn/flow/{split}/{id}.npy` `[T, 2048]`
  concatenated on the feature axis, and `feats/byola/{split}/{id}.npy`
  `[T_a, 2048]` (12.5 per second);
- 'generic': `visual/{id}.npy` and `audio/{id}.npy` (no split directories).

Everything here is plain numpy plus `tf.io.gfile`, so paths may be local or
`gs://`. The tf.data code in `pipeline.py` calls these functions through
`tf.numpy_function`, so errors raised here reach the user with the file name.
"""

import array
import codecs
import contextlib
import dataclasses
import gc
import io
import json
import math
import re
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

# Video-level classes (DESIGN.md section 1).
LABEL_REAL = 0
LABEL_BOTH = 1
LABEL_VISUAL = 2
LABEL_AUDIO = 3
NUM_CLASSES = 4

# AV-Deepfake1M has no duration field: duration = video_frames / 25.
AVDEEPFAKE1M_FPS = 25.0
_AVDEEPFAKE1M_LABELS = {
    'real': LABEL_REAL,
    'both_modified': LABEL_BOTH,
    # The spelling the official loader (avdeepfake1m.loader) tests for.
    'both-modified': LABEL_BOTH,
    'visual_modified': LABEL_VISUAL,
    'audio_modified': LABEL_AUDIO,
}

LAYOUTS = ('mdp', 'ummaformer', 'generic')
# Audio features per second of each layout's released features (DESIGN.md
# section 4); 'generic' has no fixed rate.
LAYOUT_AUDIO_RATES = {'mdp': 50.0, 'ummaformer': 12.5}
# Frames by which flow features may differ from the rgb ones of the same
# video (optical flow is often one frame short); within it the flow is cut
# or repeats its last frame to the rgb length T.
FLOW_LENGTH_SLACK = 2


@dataclasses.dataclass(frozen=True, slots=True)
class VideoRecord:
  """Metadata of one video.

  Attributes:
    file: the metadata's `file`, e.g. "train/000001.mp4" (LAV-DF) or
      "id00012/21Uxsk56VDQ/00001/real.mp4" (AV-Deepfake1M); the key of
      predictions and of the reference evaluators.
    video_id: names the feature files `{id}.npy`. LAV-DF: `file`'s name
      without directory and extension ("000001"). AV-Deepfake1M: `file`
      without extension, directories kept, as its file names repeat in
      every clip directory ("id00012/21Uxsk56VDQ/00001/real").
    split: the metadata's split, e.g. "train", "dev", "test" or "val".
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


# The segments of every video without any: one shared read-only array.
_NO_SEGMENTS = np.zeros((0, 2), np.float32)
_NO_SEGMENTS.flags.writeable = False


def label_from_modified(modify_video: bool, modify_audio: bool) -> int:
  """Video-level class from which modalities were modified."""
  if modify_video and modify_audio:
    return LABEL_BOTH
  if modify_video:
    return LABEL_VISUAL
  if modify_audio:
    return LABEL_AUDIO
  return LABEL_REAL


def _strip_extension(path: str) -> str:
  """'a/b.mp4' -> 'a/b' (os.path.splitext is slow on a million names)."""
  dot = path.rfind('.')
  return path[:dot] if dot > path.rfind('/') + 1 else path


def _video_id(file: str) -> str:
  """'train/000001.mp4' -> '000001'."""
  return _strip_extension(file.rpartition('/')[2])


# `type(x) in` rather than isinstance: bool is an int subclass, and
# `"duration": true` is a malformed entry.
_NUMBER_TYPES = frozenset((int, float))


def _is_number(x) -> bool:
  return type(x) in _NUMBER_TYPES


def _is_segment(seg) -> bool:
  # pylint: disable-next=unidiomatic-typecheck
  return (type(seg) is list and len(seg) == 2 and _is_number(seg[0]) and
          _is_number(seg[1]) and 0 <= seg[0] <= seg[1] < math.inf)


def _append_segments(segments: list, values: array.array) -> bool:
  """Appends valid `[start, end]` pairs to `values`; False at a bad one.

  Inline checks, as this runs for every segment of a million videos.
  """
  for seg in segments:
    # pylint: disable-next=unidiomatic-typecheck
    if type(seg) is list and len(seg) == 2:
      a, b = seg
      if (type(a) in _NUMBER_TYPES and type(b) in _NUMBER_TYPES and
          0 <= a <= b < math.inf):
        values.extend(seg)
        continue
    return False
  return True


_SEGMENTS_EXPECTED = ('a list of [start, end] pairs of numbers with 0 <= '
                      'start <= end')

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
     _SEGMENTS_EXPECTED),
)

_AVDEEPFAKE1M_FIELDS = (
    ('file', lambda v: type(v) is str and v, 'a non-empty string'),
    ('split', lambda v: type(v) is str and v, 'a non-empty string'),
    ('modify_type', lambda v: type(v) is str and v in _AVDEEPFAKE1M_LABELS,
     "one of 'real', 'visual_modified', 'audio_modified', 'both_modified'"),
    ('video_frames', lambda v: type(v) is int and v > 0, 'an integer > 0'),
    ('fake_segments',
     lambda v: type(v) is list and all(_is_segment(seg) for seg in v),
     _SEGMENTS_EXPECTED),
    ('visual_fake_segments',
     lambda v: type(v) is list and all(_is_segment(seg) for seg in v),
     _SEGMENTS_EXPECTED),
    ('audio_fake_segments',
     lambda v: type(v) is list and all(_is_segment(seg) for seg in v),
     _SEGMENTS_EXPECTED),
)


def _field_error(entry, fields) -> Optional[str]:
  """The first missing or malformed key of `fields`, or None."""
  if not isinstance(entry, dict):
    return f'expected a JSON object, got {type(entry).__name__}.'
  for key, check, expected in fields:
    if key not in entry:
      return f'missing key {key!r} (expected {expected}).'
    if not check(entry[key]):
      return f'key {key!r}: expected {expected}, got {entry[key]!r:.200}.'
  return None


def _lavdf_row(entry, values: array.array) -> Optional[tuple]:
  """A valid LAV-DF entry as a row for `_build_records`, else None.

  Appends the entry's segments to `values`; `_lavdf_error` explains a None.
  """
  try:
    file, split = entry['file'], entry['split']
    duration, frames = entry['duration'], entry['video_frames']
    modify_video, modify_audio = entry['modify_video'], entry['modify_audio']
    n_fakes, periods = entry['n_fakes'], entry['fake_periods']
  except (KeyError, TypeError, IndexError):
    return None
  # pylint: disable=unidiomatic-typecheck
  if not (type(file) is str and file and type(split) is str and split and
          type(duration) in _NUMBER_TYPES and 0 < duration < math.inf and
          type(frames) is int and frames > 0 and
          type(modify_video) is bool and type(modify_audio) is bool and
          type(n_fakes) is int and type(periods) is list and
          n_fakes == len(periods) and
          (modify_video or modify_audio) == (n_fakes > 0) and
          _append_segments(periods, values)):
    return None
  # pylint: enable=unidiomatic-typecheck
  n_visual = -1 if modify_video else 0  # -1: the same as fake_segments.
  n_audio = -1 if modify_audio else 0
  return (file, _video_id(file), split,
          label_from_modified(modify_video, modify_audio), float(duration),
          frames, frames / duration, n_fakes, n_visual, n_audio)


def _lavdf_error(entry) -> str:
  """What is wrong with an entry that `_lavdf_row` rejected."""
  error = _field_error(entry, _LAVDF_FIELDS)
  if error:
    return error
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


def _avdeepfake1m_row(entry, values: array.array) -> Optional[tuple]:
  """A valid AV-Deepfake1M entry as a row for `_build_records`, else None.

  Appends the entry's segments to `values` (the visual and audio ones only
  where they differ from `fake_segments`); `_avdeepfake1m_error` explains a
  None.
  """
  try:
    file, split = entry['file'], entry['split']
    modify_type, frames = entry['modify_type'], entry['video_frames']
    fake = entry['fake_segments']
    visual = entry['visual_fake_segments']
    audio = entry['audio_fake_segments']
  except (KeyError, TypeError, IndexError):
    return None
  # pylint: disable=unidiomatic-typecheck
  label = (_AVDEEPFAKE1M_LABELS.get(modify_type)
           if type(modify_type) is str else None)
  if not (label is not None and type(file) is str and file and
          type(split) is str and split and type(frames) is int and
          frames > 0 and type(fake) is list and type(visual) is list and
          type(audio) is list and bool(fake) == (label != LABEL_REAL) and
          bool(visual) == (label in (LABEL_BOTH, LABEL_VISUAL)) and
          bool(audio) == (label in (LABEL_BOTH, LABEL_AUDIO)) and
          _append_segments(fake, values)):
    return None
  # pylint: enable=unidiomatic-typecheck
  counts = []
  for segments in (visual, audio):
    if segments == fake:
      counts.append(-1)  # Shares fake_segments' array.
    elif _append_segments(segments, values):
      counts.append(len(segments))
    else:
      return None
  duration = frames / AVDEEPFAKE1M_FPS
  return (file, _strip_extension(file), split, label, duration, frames,
          AVDEEPFAKE1M_FPS, len(fake), counts[0], counts[1])


def _avdeepfake1m_error(entry) -> str:
  """What is wrong with an entry that `_avdeepfake1m_row` rejected."""
  error = _field_error(entry, _AVDEEPFAKE1M_FIELDS)
  if error:
    return error
  modify_type = entry['modify_type']
  label = _AVDEEPFAKE1M_LABELS[modify_type]
  for key, forged, what in (
      ('fake_segments', label != LABEL_REAL, 'the video'),
      ('visual_fake_segments', label in (LABEL_BOTH, LABEL_VISUAL),
       'the visual track'),
      ('audio_fake_segments', label in (LABEL_BOTH, LABEL_AUDIO),
       'the audio')):
    n = len(entry[key])
    if n and not forged:
      return (f'key {key!r} has {n} segments but modify_type is '
              f'{modify_type!r}; expected none when {what} is not modified.')
    if forged and not n:
      return (f'key {key!r} is empty but modify_type is {modify_type!r}; '
              f'expected at least one [start, end] segment where {what} is '
              'forged.')
  return f'malformed entry {entry!r:.200}.'


# Text of the metadata read at a time: memory is a chunk plus one entry.
_JSON_CHUNK_BYTES = 1 << 23
# A decoding error this close to the end of the text read so far may be the
# text cut in the middle of a value: read more and decode again.
_CUT_MARGIN = 64
_WHITESPACE = re.compile(r'[ \t\n\r]*')
_SEPARATOR = re.compile(r'[ \t\n\r]*,[ \t\n\r]*')
_JSON_DECODER = json.JSONDecoder()
# What a JSON value is, from its first character.
_JSON_KINDS = {'{': 'object', '"': 'string', 't': 'boolean', 'f': 'boolean',
               'n': 'null', **dict.fromkeys('-0123456789', 'number')}


class _Text:
  """A text file read in chunks: `text` from character `base` of the file."""

  def __init__(self, f, path: str):
    self._f = f
    self._path = path
    # 'utf-8-sig' drops a byte order mark, as json.loads does.
    self._decoder = codecs.getincrementaldecoder('utf-8-sig')('strict')
    self.text = ''
    self.base = 0
    self.eof = False

  def more(self, pos: int) -> int:
    """Drops the text before `pos`, adds a chunk; returns `pos` now (0)."""
    data = self._f.read(_JSON_CHUNK_BYTES)
    self.eof = not data
    try:
      chunk = self._decoder.decode(data, final=self.eof)
    except UnicodeDecodeError as e:
      raise ValueError(f'{self._path}: not valid JSON: not UTF-8 text near '
                       f'character {self.base + len(self.text)}: {e}') from e
    self.base += pos
    self.text = self.text[pos:] + chunk
    return 0

  def skip_whitespace(self, pos: int) -> int:
    """The first non-whitespace position from `pos`, reading as needed."""
    while True:
      pos = _WHITESPACE.match(self.text, pos).end()
      if pos < len(self.text) or self.eof:
        return pos
      pos = self.more(pos)


def _json_list_elements(t: _Text, path: str) -> Iterator[Any]:
  """The elements of the JSON list in `t`, decoded one at a time."""

  def invalid(pos, message):
    return ValueError(f'{path}: not valid JSON: {message} at character '
                      f'{t.base + pos}.')

  pos = t.skip_whitespace(t.more(0))
  if pos == len(t.text):
    raise invalid(pos, 'no value (empty file)')
  if t.text[pos] != '[':
    kind = _JSON_KINDS.get(t.text[pos])
    if kind:
      raise ValueError(f'{path}: expected a JSON list of video entries, got '
                       f'a JSON {kind}.')
    raise invalid(pos, f'unexpected {t.text[pos:pos + 20]!r}')
  pos = t.skip_whitespace(pos + 1)
  if pos < len(t.text) and t.text[pos] == ']':
    pos = t.skip_whitespace(pos + 1)
  else:
    # The C scanner of `json` without `raw_decode`'s wrapper, and one regex
    # for the separator: this loop runs once per entry.
    scan, separator = _JSON_DECODER.scan_once, _SEPARATOR.match
    while True:
      try:
        value, end = scan(t.text, pos)
      except StopIteration as e:
        error = e.value, 'Expecting value'
      except json.JSONDecodeError as e:
        error = e.pos, e.msg
      else:
        m = separator(t.text, end)
        if m is not None and m.end() < len(t.text):
          yield value
          pos = m.end()
          continue
        if end == len(t.text) and not t.eof:
          pos = t.more(pos)  # A number may go on in the next chunk.
          continue
        yield value
        pos = t.skip_whitespace(end)
        if pos < len(t.text) and t.text[pos] == ',':
          pos = t.skip_whitespace(pos + 1)
          continue
        if pos < len(t.text) and t.text[pos] == ']':
          pos = t.skip_whitespace(pos + 1)
          break
        raise invalid(pos, "expected ',' or ']' after a list element")
      error_pos, message = error
      if t.eof or (error_pos < len(t.text) - _CUT_MARGIN and
                   not message.startswith('Unterminated string')):
        raise invalid(error_pos, message)
      pos = t.more(pos)  # The entry goes on in the next chunk.
  if pos < len(t.text):
    raise invalid(pos, 'extra data after the list')


def _iter_json_list(path: str) -> Iterator[Any]:
  """The elements of the JSON list in file `path`, streamed.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: not JSON or not a list; the message names the file.
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      yield from _json_list_elements(_Text(f, path), path)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: metadata file not found.') from e


@contextlib.contextmanager
def _gc_paused():
  """Pauses the cyclic garbage collector.

  Reading a million entries creates millions of containers (and no cycles);
  the collector would traverse the growing set of records over and over.
  """
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _build_records(rows: list[tuple],
                   values: array.array) -> list[VideoRecord]:
  """VideoRecords of `_*_row` rows, emptying `rows`; segments share an array.

  A row is (file, video_id, split, label, duration, video_frames, fps,
  n_fake, n_visual, n_audio), its segments next in `values` (fake, then
  visual, then audio); n = -1 means the same segments as fake_segments.
  """
  # float64 first, then float32: the same rounding as np.float32(x).
  flat = np.asarray(values, np.float64).astype(np.float32).reshape(-1, 2)
  flat.flags.writeable = False
  splits = {}  # One string object per split name.
  records = []
  offset = 0
  # Popped from the end, so each row is freed once it is a record.
  rows.reverse()
  while rows:
    (file, video_id, split, label, duration, frames, fps, n_fake, n_visual,
     n_audio) = rows.pop()
    fake = flat[offset:offset + n_fake] if n_fake else _NO_SEGMENTS
    offset += n_fake
    segments = [fake]
    for n in (n_visual, n_audio):
      if n < 0:
        segments.append(fake)
      elif n:
        segments.append(flat[offset:offset + n])
        offset += n
      else:
        segments.append(_NO_SEGMENTS)
    # Positional: a third faster than keywords, for a million records.
    records.append(VideoRecord(file, video_id, splits.setdefault(split, split),
                               label, duration, frames, fps, fake,
                               segments[1], segments[2]))
  return records


def _read_metadata(path: str, splits: Optional[Sequence[str]],
                   row_fn: Callable[[Any, array.array], Optional[tuple]],
                   error_fn: Callable[[Any], str],
                   reader: str) -> list[VideoRecord]:
  """Streams the JSON list `path` through `row_fn` into VideoRecords."""
  if isinstance(splits, str):
    raise TypeError(f'{reader}: splits must be a list of split names, e.g. '
                    f'[{splits!r}], got the string {splits!r}.')
  keep = None if splits is None else frozenset(splits)
  values = array.array('d')  # All segments of the kept entries, flat.
  rows = []
  with _gc_paused():
    for i, entry in enumerate(_iter_json_list(path)):
      if keep is not None:
        # pylint: disable-next=unidiomatic-typecheck
        split = entry.get('split') if type(entry) is dict else None
        # pylint: disable-next=unidiomatic-typecheck
        if type(split) is str and split not in keep:
          continue
      row = row_fn(entry, values)
      if row is None:
        file = entry.get('file') if isinstance(entry, dict) else None
        where = f'entry {i}' + (f' ({file})' if isinstance(file, str) else '')
        raise ValueError(f'{path}: {where}: {error_fn(entry)}')
      rows.append(row)
    return _build_records(rows, values)


def read_lavdf_metadata(
    path: str, splits: Optional[Sequence[str]] = None) -> list[VideoRecord]:
  """Reads a LAV-DF `metadata.json` (DESIGN.md section 4).

  Streamed: memory is the records plus a chunk of text.

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
  return _read_metadata(path, splits, _lavdf_row, _lavdf_error,
                        'read_lavdf_metadata')


def read_avdeepfake1m_metadata(
    path: str, splits: Optional[Sequence[str]] = None) -> list[VideoRecord]:
  """Reads AV-Deepfake1M's `train_metadata.json` or `val_metadata.json`.

  Each entry (DESIGN.md section 4) has `file`, `split`, `modify_type` (real /
  visual_modified / audio_modified / both_modified), `video_frames` and the
  segments in seconds `fake_segments`, `visual_fake_segments` and
  `audio_fake_segments` (each `[[start, end], ...]`); `original`,
  `audio_model` and `audio_frames` are not used. There is no duration:
  duration = video_frames / 25 and fps = 25. `video_id` is `file` without
  its extension, directories kept.

  Streamed: memory is the records plus a chunk of text.

  Args:
    path: the JSON file, local or `gs://`.
    splits: keep only entries whose `split` is one of these (e.g. ['val']);
      None keeps all.

  Returns:
    The records in file order. Entries of other splits are checked only for
    their `split` key.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file is not JSON, not a list, or an entry is malformed
      (a missing key, a segment with start > end, segments that contradict
      `modify_type`); the message names the file, the entry index, its
      `file`, the key and what was expected.
  """
  return _read_metadata(path, splits, _avdeepfake1m_row, _avdeepfake1m_error,
                        'read_avdeepfake1m_metadata')


def _check_layout(layout: str, use_flow: bool = False):
  """Raises ValueError naming the config field if the layout is unknown."""
  if layout not in LAYOUTS:
    raise ValueError(f'dataset.layout: unknown layout {layout!r}; expected '
                     f'one of {LAYOUTS}.')
  if use_flow and layout != 'ummaformer':
    raise ValueError(f"dataset.use_flow = True: only the 'ummaformer' layout "
                     f'has optical-flow features (feats/tsn/flow/), but '
                     f'dataset.layout = {layout!r}.')


def _layout_dirs(root: str, layout: str, split: str,
                 use_flow: bool) -> tuple[tuple[str, ...], str]:
  """(visual directories, audio directory) of a split in `layout`."""
  _check_layout(layout, use_flow)
  root = root.rstrip('/') or '/'
  if layout == 'generic':
    return (f'{root}/visual',), f'{root}/audio'
  visual = (f'{root}/feats/tsn/rgb/{split}',)
  if layout == 'mdp':
    return visual, f'{root}/feats/audio_context/{split}'
  if use_flow:
    visual += (f'{root}/feats/tsn/flow/{split}',)
  return visual, f'{root}/feats/byola/{split}'


def feature_dirs(root: str, dataset_config: ml_collections.ConfigDict,
                 split: str) -> tuple[tuple[str, ...], str]:
  """Directories of a split's (visual files, audio file) in the layout.

  Args:
    root: dataset root, local or `gs://`.
    dataset_config: reads `layout` and `use_flow` (default False).
    split: the split; 'generic' has no split directories.

  Returns:
    (visual directories: rgb, then flow with `use_flow`; audio directory).
  """
  return _layout_dirs(root, dataset_config.layout, split,
                      bool(dataset_config.get('use_flow', False)))


def feature_paths(root: str, layout: str, split: str,
                  video_id: str) -> tuple[str, str]:
  """Paths of one video's main visual and its audio feature file.

  Args:
    root: dataset root, local or `gs://`.
    layout: 'mdp', 'ummaformer' or 'generic' (module docstring). For
      'ummaformer' the visual file is the rgb one; `video_feature_paths`
      adds the flow file of `dataset.use_flow`.
    split: the record's split.
    video_id: `VideoRecord.video_id`.

  Returns:
    (visual_path, audio_path).
  """
  (visual, *_), audio = _layout_dirs(root, layout, split, False)
  return f'{visual}/{video_id}.npy', f'{audio}/{video_id}.npy'


def video_feature_paths(
    root: str, dataset_config: ml_collections.ConfigDict, split: str,
    video_id: str) -> tuple[tuple[str, ...], str]:
  """All feature files of one video: (visual paths, audio path).

  The visual paths are the rgb file, then with `dataset.use_flow` the flow
  file, concatenated in this order on the feature axis.
  """
  visual_dirs, audio_dir = feature_dirs(root, dataset_config, split)
  return (tuple(f'{d}/{video_id}.npy' for d in visual_dirs),
          f'{audio_dir}/{video_id}.npy')


class FeatureSpec(NamedTuple):
  """A feature file and the width the config expects of it.

  Attributes:
    path: the `.npy` file.
    dim: expected width (second axis).
    setting: the config setting it comes from, for messages, e.g.
      'dataset.audio_dim = 1024'.
    hint: how to fix a wrong width, for messages.
  """
  path: str
  dim: int
  setting: str
  hint: str


def _spec(path: str, dim: int, key: str) -> FeatureSpec:
  return FeatureSpec(path, dim, f'{key} = {dim}',
                     f'set {key} to the width of the features')


def feature_specs(root: str, dataset_config: ml_collections.ConfigDict,
                  split: str, video_id: str) -> list[FeatureSpec]:
  """One video's feature files with their expected widths, audio last.

  With `dataset.use_flow`, `dataset.visual_dim` is the rgb plus the flow
  width, half of it each.

  Raises:
    ValueError: unknown `dataset.layout`, `use_flow` without the
      'ummaformer' layout, or an odd `visual_dim` with `use_flow`.
  """
  visual_paths, audio_path = video_feature_paths(root, dataset_config, split,
                                                 video_id)
  visual_dim = dataset_config.visual_dim
  audio = _spec(audio_path, dataset_config.audio_dim, 'dataset.audio_dim')
  if len(visual_paths) == 1:
    return [_spec(visual_paths[0], visual_dim, 'dataset.visual_dim'), audio]
  if visual_dim % len(visual_paths):
    raise ValueError(f'dataset.visual_dim = {visual_dim} with '
                     'dataset.use_flow = True: expected an even width, the '
                     'rgb plus the flow width.')
  dim = visual_dim // len(visual_paths)
  setting = (f'dataset.visual_dim = {visual_dim} with dataset.use_flow = '
             f'True expects {dim} per file (rgb + flow)')
  hint = 'set dataset.visual_dim to the rgb width plus the flow width'
  return [FeatureSpec(p, dim, setting, hint) for p in visual_paths] + [audio]


class FeatureError(ValueError):
  """A feature file that is not what the config expects.

  Attributes:
    kind: what is wrong: 'unreadable', 'wrong_shape', 'wrong_dtype',
      'wrong_width', 'empty', 'non_finite' or 'length_mismatch'.
    path: the file.
  """

  def __init__(self, kind: str, path: str, message: str):
    super().__init__(message)
    self.kind = kind
    self.path = path


# `.npy` headers are parsed here rather than by numpy: numpy's parser calls
# `ast.literal_eval`, which CPython < 3.11.8 can crash when threads run it at
# once (gh-106905, "AST constructor recursion depth mismatch"), and the
# pipelines read features from thread pools.
_NPY_MAGIC = b'\x93NUMPY'
_NPY_DESCR = re.compile(r"""['"]descr['"]\s*:\s*['"]([^'"]+)['"]""")
_NPY_FORTRAN = re.compile(r"""['"]fortran_order['"]\s*:\s*(True|False)""")
_NPY_SHAPE = re.compile(r"""['"]shape['"]\s*:\s*\(([^)]*)\)""")


def parse_npy_header(head: bytes, path: str):
  """`(shape, dtype, fortran_order, data_offset)` of a `.npy` file.

  Args:
    head: the file's first bytes (the whole header; 4096 suffice for every
      file numpy writes with a plain dtype).
    path: named in errors.

  Raises:
    FeatureError: not a `.npy` file of a plain (non-structured) dtype.
  """
  def fail(why):
    return FeatureError('unreadable', path,
                        f'{path}: not a readable .npy array: {why}.')
  if len(head) < 10 or not head.startswith(_NPY_MAGIC):
    raise fail('no .npy magic string')
  major = head[6]
  if major == 1:
    size, start = int.from_bytes(head[8:10], 'little'), 10
  elif major in (2, 3):
    size, start = int.from_bytes(head[8:12], 'little'), 12
  else:
    raise fail(f'unknown format version {major}')
  if len(head) < start + size:
    raise fail('truncated header')
  text = head[start:start + size].decode('utf-8' if major == 3 else 'latin1')
  descr = _NPY_DESCR.search(text)
  fortran = _NPY_FORTRAN.search(text)
  shape = _NPY_SHAPE.search(text)
  if not (descr and fortran and shape):
    raise fail(f'unsupported header {text.strip()!r}')
  try:
    dims = tuple(int(d) for d in shape.group(1).split(',') if d.strip())
    dtype = np.dtype(descr.group(1))
  except (TypeError, ValueError) as e:
    raise fail(f'bad header {text.strip()!r} ({e})') from e
  return dims, dtype, fortran.group(1) == 'True', start + size


def _array_from_buffer(buf, path: str) -> np.ndarray:
  """The array of a whole `.npy` file's bytes (a read-only view)."""
  shape, dtype, fortran, offset = parse_npy_header(bytes(buf[:65536]), path)
  count = math.prod(shape)
  if len(buf) - offset < count * dtype.itemsize:
    raise FeatureError('unreadable', path,
                       f'{path}: not a readable .npy array: the data is '
                       f'shorter than its {shape} {dtype} header says.')
  x = np.frombuffer(buf, dtype, count, offset)
  return x.reshape(shape, order='F' if fortran else 'C')


def _read_npy(path: str) -> np.ndarray:
  # One read and an in-memory parse: cheap locally, one request on GCS.
  return _array_from_buffer(_read_bytes(path, 'feature'), path)


def _read_bytes(path: str, kind: str) -> bytes:
  """The whole file through tf.io.gfile; a missing one names `path`."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: {kind} file not found.') from e


def read_npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
  """(shape, dtype) of a `.npy` file from its header, without the data.

  Raises:
    FileNotFoundError: `path` does not exist.
    FeatureError: not a `.npy` file (kind 'unreadable').
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      head = f.read(12)
      if head.startswith(_NPY_MAGIC) and len(head) == 12:
        size = (int.from_bytes(head[8:10], 'little') if head[6] == 1 else
                int.from_bytes(head[8:12], 'little'))
        head += f.read(size + 2)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(f'{path}: feature file not found.') from e
  shape, dtype, _, _ = parse_npy_header(head, path)
  return shape, dtype


def read_npy_shape(path: str) -> tuple[int, ...]:
  """Shape of a `.npy` file from its header, without reading the data."""
  return read_npy_header(path)[0]


def _check_header(shape: tuple[int, ...], dtype: np.dtype,
                  spec: FeatureSpec):
  """Raises FeatureError unless `[T > 0, spec.dim]` numeric features."""
  path = spec.path
  if len(shape) != 2:
    raise FeatureError('wrong_shape', path,
                       f'{path}: expected a 2-D [time, {spec.dim}] feature '
                       f'array, got shape {shape}.')
  if not (np.issubdtype(dtype, np.floating) or
          np.issubdtype(dtype, np.integer)):
    raise FeatureError('wrong_dtype', path, f'{path}: expected numeric '
                       f'features, got dtype {dtype}.')
  if shape[1] != spec.dim:
    raise FeatureError('wrong_width', path,
                       f'{path}: feature width is {shape[1]} but '
                       f'{spec.setting}; {spec.hint}.')
  if shape[0] == 0:
    raise FeatureError('empty', path,
                       f'{path}: zero-length feature array (shape {shape}).')


def _check_finite(x: np.ndarray, path: str, first_row: int = 0):
  """Raises FeatureError at the first NaN or Inf of `x` (row 0 = first_row)."""
  if x.dtype.kind != 'f':
    return
  # One sum finds that all is finite without a boolean copy of `x`; an
  # overflowing sum of finite values falls through to the exact check.
  with np.errstate(over='ignore', invalid='ignore'):
    if np.isfinite(x.sum()):
      return
  bad = np.argwhere(~np.isfinite(x))
  if len(bad):
    raise FeatureError('non_finite', path,
                       f'{path}: features contain NaN or Inf (first at time '
                       f'{first_row + bad[0][0]}, channel {bad[0][1]}).')


def load_feature_file(spec: FeatureSpec) -> np.ndarray:
  """Loads and checks one `[T, spec.dim]` feature file, as float32.

  Raises:
    FileNotFoundError / FeatureError naming the file: missing, not a `.npy`,
    not 2-D, not numeric, wrong width, zero length, NaN or Inf.
  """
  x = _read_npy(spec.path)
  _check_header(x.shape, x.dtype, spec)
  x = x.astype(np.float32, copy=False)
  _check_finite(x, spec.path)
  return x


# Rows checked at a time by `check_feature_file` (about this many bytes).
_CHECK_CHUNK_BYTES = 1 << 23


def check_feature_file(spec: FeatureSpec) -> tuple[int, ...]:
  """Checks one feature file as `load_feature_file` does; returns its shape.

  Local files are memory-mapped and checked a chunk at a time, so memory
  does not grow with the file.

  Raises:
    FileNotFoundError / FeatureError as `load_feature_file`.
  """
  path = spec.path
  if '://' in path:
    x = _read_npy(path)
  else:
    try:
      buf = np.memmap(path, np.uint8, mode='r')
    except FileNotFoundError as e:
      raise FileNotFoundError(f'{path}: feature file not found.') from e
    except (ValueError, OSError) as e:
      raise FeatureError('unreadable', path,
                         f'{path}: not a readable .npy array: {e}') from e
    x = _array_from_buffer(buf, path)
  _check_header(x.shape, x.dtype, spec)
  rows = max(1, _CHECK_CHUNK_BYTES // (x.shape[1] * x.itemsize or 1))
  for start in range(0, x.shape[0], rows):
    _check_finite(x[start:start + rows], path, start)
  return x.shape


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
  visual = load_feature_file(
      _spec(visual_path, visual_dim, 'dataset.visual_dim'))
  audio = load_feature_file(_spec(audio_path, audio_dim, 'dataset.audio_dim'))
  return visual, audio


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
  """`x` cut to `length` rows, or its last row repeated up to it."""
  if x.shape[0] >= length:
    return x[:length]
  return np.concatenate([x, np.repeat(x[-1:], length - x.shape[0], 0)])


def check_flow_length(rgb_path: str, rgb_length: int, flow_path: str,
                      flow_length: int):
  """Raises FeatureError if flow and rgb lengths differ beyond the slack."""
  if abs(flow_length - rgb_length) > FLOW_LENGTH_SLACK:
    raise FeatureError(
        'length_mismatch', flow_path,
        f'{flow_path}: {flow_length} frames but the rgb features '
        f'{rgb_path} have {rgb_length}; expected the same length (within '
        f'{FLOW_LENGTH_SLACK} frames).')


def load_video_features(
    root: str, dataset_config: ml_collections.ConfigDict, split: str,
    video_id: str) -> tuple[np.ndarray, np.ndarray]:
  """One video's features in `dataset.layout`, audio aligned to the visual.

  Args:
    root: dataset root, local or `gs://`.
    dataset_config: `config.dataset`; reads `layout`, `visual_dim`,
      `audio_dim`, `audio_align` and `use_flow` (default False).
    split: the record's split.
    video_id: `VideoRecord.video_id`.

  Returns:
    visual `[T, Dv]` float32 (rgb, then flow with `use_flow`; T = the rgb
    length) and audio `[T, Da]` float32, resampled in time with
    `dataset.audio_align`.

  Raises:
    FileNotFoundError / ValueError naming the file and what was expected:
    missing, not 2-D, wrong width, zero length, NaN or Inf, flow length far
    from the rgb one.
  """
  *visual_specs, audio_spec = feature_specs(root, dataset_config, split,
                                            video_id)
  visual = [load_feature_file(spec) for spec in visual_specs]
  length = visual[0].shape[0]
  if len(visual) > 1:
    for spec, x in zip(visual_specs[1:], visual[1:]):
      check_flow_length(visual_specs[0].path, length, spec.path, x.shape[0])
    visual = np.concatenate([_fit_length(x, length) for x in visual], axis=1)
  else:
    visual = visual[0]
  audio = load_feature_file(audio_spec)
  return visual, align_audio(audio, length, dataset_config.audio_align)


def read_visual_length(root: str, dataset_config: ml_collections.ConfigDict,
                       split: str, video_id: str) -> int:
  """The visual length T of one video from a `.npy` header (no data read).

  The rgb file's length, which `load_video_features` returns; its header is
  checked (2-D, numeric, width, not empty).
  """
  spec = feature_specs(root, dataset_config, split, video_id)[0]
  shape, dtype = read_npy_header(spec.path)
  _check_header(shape, dtype, spec)
  return shape[0]


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
