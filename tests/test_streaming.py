"""Streaming JSON readers against `json.load`, tiny chunks, malformed input."""

import json

import numpy as np
import pytest

from wmmt_jax.evaluation import ragged
from wmmt_jax.evaluation import streaming


def _number_text(rng, x):
  """`x` written as some writer would: repr, fixed, exponent, integer."""
  kind = rng.integers(6)
  if kind == 0:
    return repr(float(np.float32(x)))  # PyTorch `.tolist()` on float32.
  if kind == 1:
    return repr(float(x))
  if kind == 2:
    return f'{x:.{rng.integers(0, 7)}f}'
  if kind == 3:
    return f'{x:.{rng.integers(0, 10)}e}'
  if kind == 4:
    return f'{x:.{rng.integers(0, 18)}E}'.replace('E+', 'E')
  return str(int(x))


def _predictions_text(rng, n_videos, style):
  """A challenge-format file with odd but valid formatting, and its values."""
  entries, values = [], {}
  for v in range(n_videos):
    name = rng.choice([f'test/{v:05d}.mp4', f'vidéo {v}.mp4',
                       f'q"{v}\\x.mp4' if style == 'escapes' else f'a\\{v}'])
    rows = []
    for _ in range(rng.integers(0, 6)):
      s = rng.standard_normal() * 10.0 ** rng.integers(-6, 4)
      start, end = _number_text(rng, s), _number_text(rng, s + rng.random())
      if np.float32(float(end)) < np.float32(float(start)):
        start, end = end, start  # Rounding by the format swapped them.
      rows.append([_number_text(rng, rng.random()), start, end])
    if style == 'indent':
      body = '[' + ','.join(
          '\n    [' + ',\n      '.join(r) + '\n    ]' for r in rows) + '\n  ]'
    elif style == 'compact':
      body = '[' + ','.join('[' + ','.join(r) + ']' for r in rows) + ']'
    else:
      body = '[' + ', '.join('[' + ', '.join(r) + ']' for r in rows) + ']'
    # 'ascii' writes names with \u escapes, 'escapes' with escaped quotes.
    ascii_only = style in ('ascii', 'escapes')
    entries.append(f'{json.dumps(name, ensure_ascii=ascii_only)}: {body}')
  text = '{' + (',\n ' if style == 'indent' else ', ').join(entries) + '}\n'
  return text


@pytest.mark.parametrize('style',
                         ['default', 'compact', 'indent', 'ascii', 'escapes'])
@pytest.mark.parametrize('chunk', [5, 97, 1 << 22])
def test_read_predictions_matches_json(tmp_path, style, chunk):
  rng = np.random.default_rng(hash((style, chunk)) % 1000)
  text = _predictions_text(rng, 60, style)
  path = tmp_path / 'p.json'
  path.write_text(text, encoding='utf-8')
  table = streaming.read_predictions(path, chunk_bytes=chunk)
  want = json.loads(text)
  assert table.files == list(want)
  np.testing.assert_array_equal(table.lengths,
                                [len(v) for v in want.values()])
  # float32 of the float64 of the decimal, as the official evaluator.
  rows = [np.asarray(r, np.float64).reshape(-1, 3) for r in want.values()]
  np.testing.assert_array_equal(table.rows,
                                np.concatenate(rows).astype(np.float32))


@pytest.mark.parametrize('style', ['default', 'compact', 'indent', 'ascii'])
def test_plain_files_take_the_vectorised_path(tmp_path, style, monkeypatch):
  text = _predictions_text(np.random.default_rng(1), 40, style)
  want = _read(tmp_path, text, chunk=64)

  def no_slow_path(*args):
    raise AssertionError('slow path used')

  monkeypatch.setattr(streaming, '_slow_entries', no_slow_path)
  got = _read(tmp_path, text, chunk=64)
  assert got.files == want.files
  np.testing.assert_array_equal(got.rows, want.rows)


def test_parse_numbers_matches_float():
  rng = np.random.default_rng(0)
  tokens = []
  for _ in range(20000):
    x = rng.standard_normal() * 10.0 ** rng.integers(-12, 12)
    tokens.append(_number_text(rng, x))
  # Decimals next to float32 rounding midpoints, and long mantissas.
  tokens += ['16777217', '0.50000002980232238769531', '1.00000005960464477',
             '3.4028235677973366e38', '1e-50', '-0', '0.0', '1E2', '-1e+2',
             '12345678901234567890123']
  text = ('[' + ', '.join(tokens) + ']').encode()
  buf = np.frombuffer(text, np.uint8)
  starts = np.cumsum([1] + [len(t) + 2 for t in tokens[:-1]])
  limits = starts + [len(t) for t in tokens]
  got = streaming.parse_numbers(buf, starts, limits)
  want = np.array([float(t) for t in tokens])
  with np.errstate(over='ignore'):
    np.testing.assert_array_equal(got.astype(np.float32),
                                  want.astype(np.float32))
  # Without exponents the exact cases are exact in float64 too.
  plain = [t for t in tokens if 'e' not in t.lower()][:2000]
  text = ('[' + ','.join(plain) + ']').encode()
  starts = np.cumsum([1] + [len(t) + 1 for t in plain[:-1]])
  got = streaming.parse_numbers(np.frombuffer(text, np.uint8), starts,
                                starts + [len(t) for t in plain],
                                exponents=False)
  np.testing.assert_array_equal(got.astype(np.float32),
                                np.float32([float(t) for t in plain]))


@pytest.mark.parametrize('token', ['01', '1.', '.5', '+1', '-', '1e', '1e+',
                                   '--1', '1.2.3', '1-2', 'e5', '1E5.0'])
def test_parse_numbers_rejects_non_json(token):
  buf = np.frombuffer(f'[{token}]'.encode(), np.uint8)
  assert streaming.parse_numbers(buf, np.array([1]),
                                 np.array([1 + len(token)])) is None


def _read(tmp_path, text, chunk=1 << 22):
  """`read_predictions` of `text` written to a file."""
  path = tmp_path / 'p.json'
  path.write_text(text, encoding='utf-8')
  return streaming.read_predictions(path, chunk_bytes=chunk)


@pytest.mark.parametrize('chunk', [3, 1 << 22])
@pytest.mark.parametrize('text, match', [
    ('{"a.mp4": [[0.9, 1.0]]}', r"'a.mp4' row 0 \[0.9, 1.0\] is not 3 numbers"),
    ('{"a.mp4": [[0.9, 1, 2], [0.8, 2, 1]]}',
     r"'a.mp4' row 1 \[0.800000011920929, 2.0, 1.0\] has end < start"),
    ('{"a.mp4": [[0.9, 1, 2]], "b.mp4": [[NaN, 1, 2]]}',
     r"'b.mp4' row 0 .* is not finite"),
    ('{"a.mp4": [[0.9, 1, Infinity]]}', "'a.mp4' row 0 .* is not finite"),
    ('{"a.mp4": [[0.9, 1e999, 2]]}', "'a.mp4' row 0 .* is not finite"),
    ('{"a.mp4": [[0.9, "1", 2]]}', "'a.mp4' row 0 .* is not 3 numbers"),
    ('{"a.mp4": [[0.9, true, 2]]}', "'a.mp4' row 0 .* is not 3 numbers"),
    ('{"a.mp4": [0.9, 1, 2]}', "'a.mp4' row 0 0.9 is not 3 numbers"),
    ('{"a.mp4": [[0.9, 1, 2, 3]]}', "'a.mp4' row 0 .* is not 3 numbers"),
    ('{"a.mp4": {"x": 1}}', "'a.mp4' must be a list"),
    ('{"a.mp4": [[0.9, 01, 2]]}', 'invalid JSON at byte'),
    ('{"a.mp4": [[0.9 1, 2]]}', 'invalid JSON at byte'),
    ('{"a.mp4": [[0.9, 1, 2]] "b": []}', 'invalid JSON at byte'),
    ('{"a.mp4": [[0.9, 1, 2]]', 'ends inside the JSON object'),
    ('{"a.mp4": [[0.9, 1, 2]]} x', 'extra data'),
    ('[{"file": "a.mp4"}]', 'expected a JSON object'),
    ('', 'expected a JSON object'),
])
def test_malformed_predictions_name_the_file_and_row(tmp_path, text, match,
                                                     chunk):
  with pytest.raises(ragged.InputError, match=match) as e:
    _read(tmp_path, text, chunk)
  assert 'p.json' in str(e.value)


def test_odd_but_valid_predictions(tmp_path):
  text = '\ufeff  {"a": [], "b":[ ],"c" : [ [ 1 , 2 , 3 ] ] , "a": [[0, 0, 0]]}'
  table = _read(tmp_path, text, chunk=2)
  assert table.files == ['a', 'b', 'c', 'a']  # Repeats kept; the last wins.
  np.testing.assert_array_equal(table.lengths, [0, 0, 1, 1])
  assert len(_read(tmp_path, ' {}\n')) == 0


def _metadata(n, key='fake_segments'):
  """`n` metadata entries with 0-2 segments and other fields."""
  return [{'file': f'v{i}.mp4', 'duration': 3.5, key: [[0.5 * i, 0.5 * i + 1]]
           * (i % 3), 'transcripts': [{'word': 'x', 'start': 0, 'end': 1}]}
          for i in range(n)]


@pytest.mark.parametrize('chunk', [64, 1 << 22])
def test_read_metadata_matches_json(tmp_path, chunk):
  entries = _metadata(50)
  path = tmp_path / 'm.json'
  path.write_text(json.dumps(entries, indent=1))
  table = streaming.read_metadata(path, chunk_bytes=chunk)
  assert table.files == [e['file'] for e in entries]
  want = np.float32([s for e in entries for s in e['fake_segments']])
  np.testing.assert_array_equal(table.rows, want.reshape(-1, 2))
  np.testing.assert_array_equal(table.lengths,
                                [len(e['fake_segments']) for e in entries])


def test_read_metadata_segments_key_candidates(tmp_path):
  path = tmp_path / 'm.json'
  path.write_text(json.dumps(_metadata(5, key='fake_periods')))
  table = streaming.read_metadata(path, 'file',
                                  ('fake_segments', 'fake_periods'))
  np.testing.assert_array_equal(table.lengths, [0, 1, 2, 0, 1])
  with pytest.raises(ragged.InputError,
                     match=r"entry 0 \('v0.mp4'\) has no list 'fake_segm"):
    streaming.read_metadata(path, 'file', 'fake_segments')


@pytest.mark.parametrize('entries, match', [
    ([{'name': 'a'}], "entry 0 has no string 'file' field"),
    ([{'file': 'a', 'fake_segments': [[1, 0]]}],
     r"'a' row 0 \[1.0, 0.0\] has end < start"),
    ([{'file': 'a', 'fake_segments': [[0, 1, 2]]}],
     "'a' row 0 .* is not 2 numbers"),
    ([{'file': 'a', 'fake_segments': [[0, 1]]}, 3], 'entry 1 must be an obj'),
    ([{'file': 'a', 'fake_segments': [1, 2]}], "'a' row 0 1 is not 2 numbers"),
    ([{'file': 'a', 'fake_segments': [[True, 2]]}], 'is not 2 numbers'),
    ([{'file': 'a', 'fake_segments': 'none'}], "has no list 'fake_segments'"),
])
def test_malformed_metadata(tmp_path, entries, match):
  path = tmp_path / 'm.json'
  path.write_text(json.dumps(entries))
  with pytest.raises(ragged.InputError, match=match):
    streaming.read_metadata(path)
  with pytest.raises(ragged.InputError, match=match):
    streaming.segments_from_entries(entries, 'file', ('fake_segments',),
                                    'metadata')


@pytest.mark.parametrize('text, match', [
    ('[{"file": "a", "fake_segments": []}', 'ends inside the JSON list'),
    ('[{"file": "a", "fake_segments": []} {"file": "b"}]',
     'invalid JSON at byte'),
    ('{"file": "a"}', 'expected a JSON list'),
    ('[{"file": "a", "fake_segments": []}] []', 'extra data'),
])
def test_malformed_metadata_json(tmp_path, text, match):
  path = tmp_path / 'm.json'
  path.write_text(text)
  for chunk in (3, 1 << 22):
    with pytest.raises(ragged.InputError, match=match):
      streaming.read_metadata(path, chunk_bytes=chunk)
