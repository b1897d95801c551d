"""Per-video rows of many videos as one flat array: no Python object per row.

Predictions of 1.1 million videos x 100 proposals are 110 million rows. As
Python lists they take tens of GB; as one float32 `[P, 3]` array with offsets
they take 1.3 GB, and every metric can work on them with numpy. Both the JSON
readers (`streaming.py`) and the metrics (`metrics.py`) use this layout.
"""

import dataclasses

import numpy as np


class InputError(ValueError):
  """A malformed input file or value; the message names the file and entry."""


@dataclasses.dataclass
class RaggedRows:
  """Rows of many videos: video `i` owns `rows[offsets[i]:offsets[i + 1]]`.

  Attributes:
    files: `[V]` file names, in input order (may repeat in ground truth: the
      official evaluator scores every metadata entry).
    rows: `[R, W]` float32 rows of all videos, concatenated.
    offsets: `[V + 1]` int64, `offsets[0] == 0`, `offsets[-1] == R`.
  """
  files: list
  rows: np.ndarray
  offsets: np.ndarray

  def __post_init__(self):
    if len(self.offsets) != len(self.files) + 1:
      raise ValueError(f'offsets has {len(self.offsets)} entries for '
                       f'{len(self.files)} files; expected files + 1.')

  def __len__(self):
    return len(self.files)

  @property
  def width(self):
    """Values per row (3 for proposals, 2 for segments)."""
    return self.rows.shape[1]

  @property
  def lengths(self):
    """`[V]` int64 number of rows of each video."""
    return np.diff(self.offsets)

  def video(self, i):
    """Rows `[K, W]` of video `i` (a view)."""
    return self.rows[self.offsets[i]:self.offsets[i + 1]]

  def video_of_row(self, r):
    """Index of the video that owns flat row `r`."""
    return int(np.searchsorted(self.offsets, r, side='right')) - 1

  @classmethod
  def from_mapping(cls, mapping, width, what='rows'):
    """Builds the flat layout from `{file: [K, width] array-like}`.

    None or an empty value is a video without rows.

    Args:
      mapping: dict file -> rows (lists, tuples or arrays).
      width: values per row.
      what: name of the mapping in error messages ('predictions', ...).

    Raises:
      InputError: a value is not `[K, width]` numbers; the message names the
        file.
    """
    files = list(mapping)
    arrays = [_as_rows(mapping[f], width, what, f) for f in files]
    lengths = np.array([len(a) for a in arrays], np.int64)
    offsets = np.zeros(len(files) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = (np.concatenate(arrays) if arrays
            else np.zeros((0, width), np.float32))
    return cls(files, rows, offsets)


def _as_rows(value, width, what, file):
  """`value` as float32 `[K, width]`; None or empty gives `[0, width]`."""
  if value is None:
    return np.zeros((0, width), np.float32)
  try:
    rows = np.asarray(value, np.float32)
  except (TypeError, ValueError) as e:
    raise InputError(f'{what}[{file!r}] must be [K, {width}] numbers: {e}'
                     ) from None
  if rows.size == 0:
    return np.zeros((0, width), np.float32)
  if rows.ndim != 2 or rows.shape[1] != width:
    raise InputError(f'{what}[{file!r}] must be [K, {width}], got shape '
                     f'{rows.shape}.')
  return rows


def gather(table, videos):
  """Rows of the given videos, concatenated in that order.

  Args:
    table: a `RaggedRows`.
    videos: `[B]` int video indices into `table`; -1 is a video without rows.

  Returns:
    `(rows [sum K, W], lengths [B])`: a copy, except that a run of
    consecutive videos comes back as a slice.
  """
  videos = np.asarray(videos, np.int64)
  present = videos >= 0
  starts = np.zeros(videos.size, np.int64)
  lengths = np.zeros(videos.size, np.int64)
  starts[present] = table.offsets[videos[present]]
  lengths[present] = table.offsets[videos[present] + 1] - starts[present]
  if videos.size and present.all() and np.all(np.diff(videos) == 1):
    # Predictions written in metadata order: no copy.
    return table.rows[starts[0]:starts[0] + lengths.sum()], lengths
  # Flat row index: each video's start, plus the position within its block.
  block = np.cumsum(lengths) - lengths
  total = int(lengths.sum())
  index = np.arange(total, dtype=np.int64) + np.repeat(starts - block, lengths)
  return table.rows[index], lengths


def check_rows(table, what, is_proposal):
  """Raises `InputError` naming the first malformed row of `table`.

  A row is malformed when a value is NaN or infinite, or when its end is
  before its start (proposals `[score, start, end]`, segments `[start, end]`).

  Args:
    table: a `RaggedRows`.
    what: name in the message, e.g. 'P.json' or 'predictions'.
    is_proposal: rows are `(score, start, end)` rather than `(start, end)`.
  """
  rows = table.rows
  if rows.size == 0:
    return
  start = rows[:, 1] if is_proposal else rows[:, 0]
  end = rows[:, 2] if is_proposal else rows[:, 1]
  # Cheap test first: a float64 sum of float32 values is finite exactly when
  # every value is (it cannot overflow).
  if np.isfinite(rows.sum(dtype=np.float64)) and not (end < start).any():
    return
  bad = ~np.isfinite(rows).all(axis=1) | (end < start)
  r = int(np.argmax(bad))
  v = table.video_of_row(r)
  row = [float(x) for x in rows[r]]
  reason = ('is not finite' if not np.isfinite(rows[r]).all()
            else 'has end < start')
  raise InputError(row_message(what, table.files[v], r - table.offsets[v],
                               row, reason, is_proposal))


def row_message(what, file, index, row, reason, is_proposal):
  """The one wording of a malformed-row error, e.g.

  `P.json: 'a.mp4' row 2 [0.9, 5.0, 4.0] has end < start (rows are
  [score, start, end])`.
  """
  layout = '[score, start, end]' if is_proposal else '[start, end]'
  return (f'{what}: {file!r} row {int(index)} {row!r} {reason} (rows are '
          f'{layout}, row numbers from 0).')
