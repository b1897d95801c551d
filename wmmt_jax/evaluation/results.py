"""Writing predictions and metric results: challenge JSON, tables, atomic files."""

import json
import os
import tempfile

import numpy as np


def _to_python(obj):
  """Numpy scalars and arrays (also nested in dicts and lists) as Python types."""
  if isinstance(obj, dict):
    return {k: _to_python(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_python(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _to_python(obj.tolist())
  if isinstance(obj, np.generic):
    return obj.item()
  return obj


def write_json_atomic(path, obj, indent=None):
  """Writes `obj` as JSON to `path` so that no half-written file is ever seen.

  The JSON goes to a temporary file in the same directory (so the final
  rename stays on one file system) and `os.replace` moves it into place; on
  any error the temporary file is removed. Numpy scalars and arrays are
  written as plain numbers and lists.

  Args:
    path: destination file; its directory is created if missing.
    obj: a JSON-serialisable object.
    indent: passed to `json.dump`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(_to_python(obj), f, indent=indent)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def predictions_to_json(predictions, *, pad_empty=False):
  """Predictions in the AV-Deepfake1M challenge format.

  Values are converted to Python floats without rounding, so float32 inputs
  round-trip exactly through JSON into the float32 official evaluator.

  Args:
    predictions: dict file -> `[K, 3]` rows `(score, start_s, end_s)`, best
      first.
    pad_empty: write an empty list as the dummy row `[0, 0, 0]`, since the
      official `avdeepfake1m` evaluator panics on an empty list
      (DESIGN.md section 5).

  Returns:
    `{file: [[score, start_s, end_s], ...]}` of Python floats.
  """
  out = {}
  for file, rows in predictions.items():
    rows = np.asarray(rows)
    if rows.size and (rows.ndim != 2 or rows.shape[1] != 3):
      raise ValueError(f'predictions[{file!r}] must be [K, 3], got shape '
                       f'{rows.shape}.')
    out[file] = [[float(x) for x in row] for row in rows.reshape(-1, 3)]
    if pad_empty and not out[file]:
      out[file] = [[0.0, 0.0, 0.0]]
  return out


def _key_str(key):
  """A metric key as the protocol writes it: `50`, `0.5`, `0.75`."""
  if isinstance(key, (int, np.integer)):
    return str(int(key))
  # Thresholds are float32 in the evaluator: print the shortest string of that
  # float32, so 0.6 and np.linspace's 0.6000000000000001 both read "0.6".
  return np.format_float_positional(np.float32(key), unique=True, trim='-')


def results_to_jsonable(results):
  """A results dict with JSON keys and Python values.

  Args:
    results: dict with `ap` ({iou: value}), `ar` ({n: value}) and optionally
      other entries (`video_accuracy`, `auc`, `protocol`, ...).

  Returns:
    A copy with the keys of `ap` and `ar` as strings exactly as the protocol
    writes them (`"0.5"`, `"0.75"`, `"50"`) and values as Python floats.
  """
  out = {}
  for name, value in results.items():
    if name in ('ap', 'ar'):
      out[name] = {_key_str(k): float(v) for k, v in value.items()}
    elif name == 'protocols':
      out[name] = {p: results_to_jsonable(v) for p, v in value.items()}
    else:
      out[name] = _to_python(value)
  return out


def _percent(value):
  return f'{100.0 * float(value):.2f}'


def format_results_table(results):
  """A fixed-width text table of a results dict, values in percent.

  Args:
    results: dict with `ap` ({iou: value}), `ar` ({n: value}) and optionally
      `video_accuracy`, `auc` and `protocol`.

  Returns:
    A header line of metric names and a line of values with 2 decimals,
    including mAP (mean of the APs) and mean AR, e.g.

      protocol: lavdf
      AP@0.5  AP@0.75  AP@0.95    mAP  AR@100  ...  mean AR
       92.28    86.67    60.94  79.96   85.56  ...    85.51
  """
  columns = []
  ap, ar = results.get('ap', {}), results.get('ar', {})
  for k, v in ap.items():
    columns.append((f'AP@{_key_str(k)}', _percent(v)))
  if ap:
    columns.append(('mAP', _percent(np.mean([float(v) for v in ap.values()]))))
  for k, v in ar.items():
    columns.append((f'AR@{_key_str(k)}', _percent(v)))
  if ar:
    columns.append(
        ('mean AR', _percent(np.mean([float(v) for v in ar.values()]))))
  if results.get('video_accuracy') is not None:
    columns.append(('acc', _percent(results['video_accuracy'])))
  if results.get('auc') is not None:
    columns.append(('AUC', _percent(results['auc'])))
  widths = [max(len(name), len(value)) for name, value in columns]
  header = '  '.join(n.rjust(w) for (n, _), w in zip(columns, widths))
  values = '  '.join(v.rjust(w) for (_, v), w in zip(columns, widths))
  lines = [header, values]
  if results.get('protocol'):
    lines.insert(0, f'protocol: {results["protocol"]}')
  for name, extra in results.get('protocols', {}).items():
    lines += ['', format_results_table(dict(extra, protocol=name))]
  return '\n'.join(lines)
