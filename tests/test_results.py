"""Result files: atomic JSON, challenge format, tables."""

import json
import os

import numpy as np
import pytest

from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import results


def test_write_json_atomic_round_trips(tmp_path):
  path = tmp_path / 'sub' / 'result.json'
  obj = {'a': [[0.5, 1.0, 2.0]], 'n': np.int64(3), 'x': np.float32(0.25),
         'arr': np.arange(3)}
  results.write_json_atomic(str(path), obj)
  assert json.loads(path.read_text()) == {
      'a': [[0.5, 1.0, 2.0]], 'n': 3, 'x': 0.25, 'arr': [0, 1, 2]}
  # Overwrite in place; no temporary file is left behind.
  results.write_json_atomic(str(path), {'b': 1})
  assert json.loads(path.read_text()) == {'b': 1}
  assert os.listdir(path.parent) == ['result.json']


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
  path = tmp_path / 'result.json'
  results.write_json_atomic(str(path), {'ok': True})
  with pytest.raises(TypeError):
    results.write_json_atomic(str(path), {'bad': object()})
  assert json.loads(path.read_text()) == {'ok': True}
  assert os.listdir(tmp_path) == ['result.json']


def test_predictions_to_json():
  rows = np.array([[0.9, 0.12, 0.48], [0.1, 1.0, 2.0]], np.float32)
  got = results.predictions_to_json({'a.mp4': rows, 'b.mp4': np.zeros((0, 3))})
  assert got['b.mp4'] == []
  assert all(type(x) is float for x in got['a.mp4'][0])
  # No rounding: the float32 values come back exactly.
  back = np.asarray(json.loads(json.dumps(got))['a.mp4'], np.float32)
  np.testing.assert_array_equal(back, rows)
  padded = results.predictions_to_json({'b.mp4': []}, pad_empty=True)
  assert padded == {'b.mp4': [[0.0, 0.0, 0.0]]}
  with pytest.raises(ValueError, match='a.mp4'):
    results.predictions_to_json({'a.mp4': np.zeros((2, 2))})


def _results():
  res = {'ap': {0.5: 0.9228, 0.75: 0.8667, 0.95: 0.6094},
         'ar': {100: 0.8556, 50: 0.8536, 20: 0.5, 10: 0.25}}
  res.update(protocol='lavdf', video_accuracy=0.875, auc=np.float64(0.9))
  return res


def test_format_results_table():
  table = results.format_results_table(_results())
  lines = table.splitlines()
  assert lines[0] == 'protocol: lavdf'
  header, values = lines[1].split(), lines[2].split()
  assert header[:4] == ['AP@0.5', 'AP@0.75', 'AP@0.95', 'mAP']
  assert 'AR@100' in header and 'AUC' in header and 'acc' in header
  for number in ('92.28', '86.67', '60.94', '79.96', '85.56', '85.36', '50.00',
                 '25.00', '61.48', '87.50', '90.00'):
    assert number in values
  # Fixed width: every column ends where its header ends.
  assert len(lines[1]) == len(lines[2])


def test_format_results_table_from_ap_ar_1d():
  res = metrics.ap_ar_1d({'a': [[0.9, 0, 1]]}, {'a': [[0, 1]]},
                         **metrics.PROTOCOLS['avdeepfake1m'])
  table = results.format_results_table(res)
  assert 'AP@0.9' in table and 'AR@50' in table and '100.00' in table


def test_results_to_jsonable():
  res = _results()
  res['ap'] = {float(t): np.float32(0.5) for t in np.linspace(0.5, 0.7, 3)}
  got = results.results_to_jsonable(res)
  assert list(got['ap']) == ['0.5', '0.6', '0.7']
  assert list(got['ar']) == ['100', '50', '20', '10']
  assert all(type(v) is float for v in got['ap'].values())
  assert got['protocol'] == 'lavdf' and type(got['auc']) is float
  json.dumps(got)


def test_extra_protocols_in_json_table_and_scalars():
  from wmmt_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  res = {'ap': {0.1: 0.5}, 'ar': {20: 0.25}, 'video_accuracy': 0.75,
         'auc': 0.5, 'protocol': 'wmmt',
         'protocols': {'lavdf': {'ap': {0.5: 0.125, 0.95: 0.0},
                                 'ar': {100: 1.0}}}}
  assert results.results_to_jsonable(res)['protocols'] == {
      'lavdf': {'ap': {'0.5': 0.125, '0.95': 0.0}, 'ar': {'100': 1.0}}}
  table = results.format_results_table(res).splitlines()
  assert table[0] == 'protocol: wmmt' and 'protocol: lavdf' in table
  assert table[-2].split() == ['AP@0.5', 'AP@0.95', 'mAP', 'AR@100',
                               'mean', 'AR']
  assert table[-1].split() == ['12.50', '0.00', '6.25', '100.00', '100.00']
  scalars = inference.flat_scalars(res)
  assert scalars['eval/ap@0.1'] == 0.5
  assert scalars['eval/lavdf/ap@0.5'] == 0.125
  assert scalars['eval/lavdf/map'] == 0.0625
  assert scalars['eval/lavdf/mean_ar'] == 1.0
  assert 'eval/lavdf/auc' not in scalars
