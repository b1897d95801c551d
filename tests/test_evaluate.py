"""The `wmmt-eval` command line and `wmmt_jax.evaluation.ap_ar`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import wmmt_jax.evaluation
from wmmt_jax import evaluate
from wmmt_jax.evaluation import metrics
from wmmt_jax.evaluation import official
from wmmt_jax.evaluation import ragged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three forged segments, perfectly predicted; one real video.
METADATA = [
    {'file': 'a.mp4', 'fake_segments': [[0.0, 1.0], [2.0, 3.0]]},
    {'file': 'b.mp4', 'fake_segments': [[4.0, 5.0]]},
    {'file': 'real.mp4', 'fake_segments': []},
]
PERFECT = {'a.mp4': [[0.9, 0.0, 1.0], [0.8, 2.0, 3.0]],
           'b.mp4': [[0.7, 4.0, 5.0]], 'real.mp4': []}


def _files(tmp_path, predictions, metadata=METADATA):
  """Writes the two JSON files; returns their command-line flags."""
  p, m = tmp_path / 'pred.json', tmp_path / 'meta.json'
  p.write_text(json.dumps(predictions))
  m.write_text(json.dumps(metadata))
  return ['--predictions', str(p), '--metadata', str(m)]


def _run(capsys, argv):
  """`(exit status, stdout, stderr)` of the command line."""
  status = evaluate.main(argv)
  out, err = capsys.readouterr()
  return status, out, err


def _json(capsys, argv):
  """The parsed stdout and the stderr of a successful run."""
  status, out, err = _run(capsys, argv)
  assert status == 0, err
  return json.loads(out), err


def test_perfect_result_on_three_segments(tmp_path, capsys):
  res, err = _json(capsys, _files(tmp_path, PERFECT))
  assert not err
  # The official sum leaves out the first of 3 recall steps: 2/3.
  assert res['ap'] == {k: pytest.approx(2 / 3) for k in
                       ('0.5', '0.75', '0.9', '0.95')}
  assert res['ar'] == {k: 1.0 for k in ('50', '30', '20', '10', '5')}
  # Textbook AP includes it.
  res, _ = _json(capsys, _files(tmp_path, PERFECT) +
                 ['--official-quirks', 'off'])
  assert res['ap']['0.5'] == 1.0


@pytest.mark.parametrize('protocol, ap_keys, ar_keys', [
    ('avdeepfake1m', ['0.5', '0.75', '0.9', '0.95'],
     ['50', '30', '20', '10', '5']),
    ('lavdf', ['0.5', '0.75', '0.95'], ['100', '50', '20', '10']),
    ('wmmt', ['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7'],
     ['20', '10', '5', '2']),
])
def test_protocol_thresholds(tmp_path, capsys, protocol, ap_keys, ar_keys):
  key = 'fake_periods' if protocol == 'lavdf' else 'fake_segments'
  metadata = [{'file': e['file'], key: e['fake_segments']} for e in METADATA]
  res, _ = _json(capsys, _files(tmp_path, PERFECT, metadata) +
                 ['--protocol', protocol])
  assert list(res['ap']) == ap_keys
  assert list(res['ar']) == ar_keys
  assert all(0 <= v <= 1 for part in res.values() for v in part.values())


def test_threshold_flags_repeatable_or_comma_lists(tmp_path, capsys):
  res, _ = _json(capsys, _files(tmp_path, PERFECT) + [
      '--ap-iou', '0.3,0.6', '--ap-iou', '0.85', '--ar-n', '1', '--ar-n',
      '2,3', '--ar-iou', '0.5'])
  assert list(res['ap']) == ['0.3', '0.6', '0.85']
  assert res['ar'] == {'1': pytest.approx(2 / 3), '2': 1.0, '3': 1.0}


def test_list_order_versus_score_order(tmp_path, capsys):
  # The 0.1 proposal is listed first: in list order it takes the segment.
  predictions = {'a.mp4': [[0.1, 0.0, 1.0], [0.9, 0.0, 1.0]]}
  metadata = [{'file': 'a.mp4', 'fake_segments': [[0.0, 1.0]]}]
  argv = _files(tmp_path, predictions, metadata) + ['--ap-iou', '0.5']
  listed, _ = _json(capsys, argv)
  by_score, _ = _json(capsys, argv + ['--official-quirks', 'off'])
  # Pooled by score: FP (0.9) then TP (0.1): AP = 1 * prec_2 = 0.5.
  assert listed['ap'] == {'0.5': 0.5}
  assert by_score['ap'] == {'0.5': 1.0}


def test_one_proposal_recalls_two_segments(tmp_path, capsys):
  metadata = [{'file': 'a.mp4', 'fake_segments': [[0.0, 1.0], [0.0, 1.05]]}]
  res, _ = _json(capsys, _files(tmp_path, {'a.mp4': [[0.9, 0.0, 1.0]]},
                                metadata) + ['--ar-n', '1'])
  assert res['ar'] == {'1': 1.0}


def test_video_without_proposals_and_missing_video(tmp_path, capsys):
  predictions = {'a.mp4': PERFECT['a.mp4'], 'real.mp4': []}  # b.mp4 missing.
  res, err = _json(capsys, _files(tmp_path, predictions) + ['--ar-n', '5'])
  assert 'warning: ' in err and '1 of 3 videos' in err
  assert '1 forged segments count as misses' in err
  # N_gt = 3; TPs at ranks 1, 2: the second step counts.
  assert res['ap']['0.5'] == pytest.approx(1 / 3)
  assert res['ar'] == {'5': pytest.approx(2 / 3)}
  # The same as an empty list, which is not worth a warning.
  res_empty, err = _json(capsys, _files(tmp_path, dict(predictions,
                                                       **{'b.mp4': []})) +
                         ['--ar-n', '5'])
  assert res_empty == res and not err


def test_temporal_order_drops_videos_without_proposals(tmp_path, capsys):
  predictions = {'a.mp4': [[0.9, 5.0, 6.0], [0.8, 2.0, 3.0], [0.7, 0.0, 1.0]],
                 'b.mp4': []}
  argv = _files(tmp_path, predictions) + ['--ar-n', '2', '--ar-iou', '0.5']
  listed, _ = _json(capsys, argv)
  temporal, _ = _json(capsys, argv + ['--ar-order', 'temporal'])
  # Listed: the first 2 recall 1 of 3 segments. Temporal: the first 2 by
  # start recall both segments of a.mp4, and b.mp4 leaves the denominator.
  assert listed['ar'] == {'2': pytest.approx(1 / 3)}
  assert temporal['ar'] == {'2': 1.0}
  assert temporal['ap'] == listed['ap']


def test_fps_means_prediction_times_in_frames(tmp_path, capsys):
  frames = {f: [[s, a * 25, b * 25] for s, a, b in rows]
            for f, rows in PERFECT.items()}
  seconds, _ = _json(capsys, _files(tmp_path, PERFECT))
  at_25, _ = _json(capsys, _files(tmp_path, frames) + ['--fps', '25'])
  assert at_25 == seconds
  at_1, _ = _json(capsys, _files(tmp_path, frames))
  assert at_1['ar']['50'] == 0.0


def test_segments_key(tmp_path, capsys):
  metadata = [{'file': e['file'], 'fake_periods': e['fake_segments'],
               'fake_segments': []} for e in METADATA]
  argv = _files(tmp_path, PERFECT, metadata)
  periods, _ = _json(capsys, argv + ['--segments-key', 'fake_periods'])
  assert periods['ar']['50'] == 1.0
  segments, _ = _json(capsys, argv)  # avdeepfake1m: fake_segments.
  assert segments['ar']['50'] == 0.0
  renamed = [{'name': e['file'], 'fake_segments': e['fake_segments']}
             for e in METADATA]
  res, _ = _json(capsys, _files(tmp_path, PERFECT, renamed) +
                 ['--file-key', 'name'])
  assert res['ar']['50'] == 1.0


def test_extra_predictions_warn_or_fail_with_strict(tmp_path, capsys):
  argv = _files(tmp_path, dict(PERFECT, **{'other.mp4': [[0.5, 0, 1]]}))
  res, err = _json(capsys, argv)
  assert "1 of 4 predicted files are not in" in err and 'other.mp4' in err
  assert res['ap']['0.5'] == pytest.approx(2 / 3)
  status, out, err = _run(capsys, argv + ['--strict'])
  assert status == 1 and not out
  assert 'error: ' in err and 'other.mp4' in err


@pytest.mark.parametrize('predictions, match', [
    ({'a.mp4': [[0.9, 0.0]]}, r"'a.mp4' row 0 \[0.9, 0.0\] is not 3 numbers"),
    ({'a.mp4': [[0.9, 0, 1], [0.8, 3.0, 2.0]]},
     r"'a.mp4' row 1 .* has end < start"),
    ({'b.mp4': [[float('nan'), 4, 5]]}, "'b.mp4' row 0 .* is not finite"),
    ({'b.mp4': [[0.5, 4, 5, 6]]}, "'b.mp4' row 0 .* is not 3 numbers"),
    ({'b.mp4': 'none'}, "'b.mp4' must be a list"),
])
def test_malformed_rows_are_errors(tmp_path, capsys, predictions, match):
  status, out, err = _run(capsys, _files(tmp_path, predictions))
  assert status == 1 and not out
  assert err.startswith('wmmt-eval: error: ') and 'pred.json' in err
  assert __import__('re').search(match, err), err


def test_malformed_metadata_and_missing_files(tmp_path, capsys):
  argv = _files(tmp_path, PERFECT, [{'file': 'a.mp4', 'segments': []}])
  status, _, err = _run(capsys, argv)
  assert status == 1 and "entry 0 ('a.mp4') has no list 'fake_segments'" in err
  argv = _files(tmp_path, PERFECT)
  status, _, err = _run(capsys, ['--predictions', str(tmp_path / 'no.json'),
                                 '--metadata', argv[-1]])
  assert status == 1 and 'no.json' in err


def test_bad_flags_exit_2(tmp_path, capsys):
  argv = _files(tmp_path, PERFECT)
  for extra in (['--fps', '0'], ['--ar-n', '0'], ['--ap-iou', 'x'],
                ['--protocol', 'nope']):
    with pytest.raises(SystemExit) as e:
      evaluate.main(argv + extra)
    assert e.value.code == 2
  capsys.readouterr()


def test_table(tmp_path, capsys):
  status, out, _ = _run(capsys, _files(tmp_path, PERFECT) +
                        ['--table', '--protocol', 'lavdf', '--segments-key',
                         'fake_segments'])
  assert status == 0
  lines = out.splitlines()
  assert lines[0] == 'protocol: lavdf'
  assert lines[1].split()[:4] == ['AP@0.5', 'AP@0.75', 'AP@0.95', 'mAP']
  assert lines[2].split()[0] == '66.67'


def test_python_dash_m(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, '-m', 'wmmt_jax.evaluate'] + _files(tmp_path, PERFECT),
      capture_output=True, text=True, env=env, check=True)
  assert proc.stderr == ''
  assert json.loads(proc.stdout)['ap']['0.5'] == pytest.approx(2 / 3)


def test_matches_official_evaluator_from_files(tmp_path, capsys):
  module = official.load()
  if module is None:
    pytest.skip(f'official extension not found (set {official.ENV_VAR})')
  rng = np.random.default_rng(7)
  metadata, predictions = [], {}
  for v in range(300):
    segs = []
    for _ in range(rng.integers(0, 4)):
      s = round(float(rng.uniform(0, 20)), 2)
      segs.append([s, round(s + float(rng.uniform(0.04, 3)), 2)])
    metadata.append({'file': f'v{v}.mp4', 'fake_segments': segs})
    rows = []
    for _ in range(rng.integers(1, 30)):  # The official one needs >= 1 row.
      if segs and rng.random() < 0.5:
        a, b = segs[rng.integers(len(segs))]
        a, b = a + rng.normal(0, 0.2), b + rng.normal(0, 0.2)
      else:
        a = rng.uniform(0, 20)
        b = a + rng.uniform(0.04, 3)
      # Times in frames at 25 fps, scores with ties.
      rows.append([round(float(rng.random()), 2), float(np.float32(a * 25)),
                   float(np.float32(max(a, b) * 25))])
    predictions[f'v{v}.mp4'] = rows
  argv = _files(tmp_path, predictions, metadata)
  for protocol in metrics.PROTOCOLS:
    proto = metrics.PROTOCOLS[protocol]
    ours, _ = _json(capsys, argv + ['--protocol', protocol, '--fps', '25',
                                    '--segments-key', 'fake_segments'])
    theirs = module.ap_ar_1d(argv[1], argv[3], 'file', 'fake_segments', 25.0,
                             list(proto['ap_ious']), list(proto['ar_ns']),
                             list(proto['ar_ious']))
    assert list(ours['ap'].values()) == list(theirs['ap'].values())
    assert list(ours['ar'].values()) == list(theirs['ar'].values())


def test_ap_ar_library():
  res = wmmt_jax.evaluation.ap_ar(PERFECT, METADATA)
  assert res['ap'][0.5] == pytest.approx(2 / 3)
  # Same numbers from {file: segments}, from flat tables and via ap_ar_1d.
  gt = {e['file']: e['fake_segments'] for e in METADATA}
  assert wmmt_jax.evaluation.ap_ar(PERFECT, gt) == res
  table = ragged.RaggedRows.from_mapping(PERFECT, 3)
  assert wmmt_jax.evaluation.ap_ar(table, gt) == res
  assert metrics.ap_ar_1d(PERFECT, gt,
                          **metrics.PROTOCOLS['avdeepfake1m']) == res
  lavdf = wmmt_jax.evaluation.ap_ar(
      PERFECT, [{'file': f, 'fake_periods': s} for f, s in gt.items()],
      protocol='lavdf')
  assert list(lavdf['ar']) == [100, 50, 20, 10]


def test_ap_ar_library_warnings_and_errors():
  with pytest.warns(metrics.EvaluationWarning, match='2 of 3 videos'):
    wmmt_jax.evaluation.ap_ar({'a.mp4': PERFECT['a.mp4']}, METADATA[:2] +
                              [{'file': 'c.mp4', 'fake_segments': []}])
  with pytest.warns(metrics.EvaluationWarning, match='appear more than once'):
    table = ragged.RaggedRows.from_mapping(PERFECT, 3)
    table = ragged.RaggedRows(table.files + ['a.mp4'],
                              np.concatenate([table.rows, [[0.1, 0, 1]]]),
                              np.append(table.offsets, table.offsets[-1] + 1))
    wmmt_jax.evaluation.ap_ar(table, METADATA)
  with pytest.warns(metrics.EvaluationWarning, match='1 entries repeat'):
    twice = wmmt_jax.evaluation.ap_ar(PERFECT, METADATA + METADATA[:1])
  # The official evaluator pools the repeated video twice.
  assert twice['ar'][50] == 1.0 and twice['ap'][0.5] == pytest.approx(4 / 5)
  with pytest.raises(wmmt_jax.evaluation.InputError, match='not in'):
    wmmt_jax.evaluation.ap_ar(dict(PERFECT, x=[]), METADATA, strict=True)
  with pytest.raises(wmmt_jax.evaluation.InputError, match="'a.mp4' row 0"):
    wmmt_jax.evaluation.ap_ar({'a.mp4': [[0.5, 2, 1]]}, METADATA)
  with pytest.raises(ValueError, match='protocol'):
    wmmt_jax.evaluation.ap_ar(PERFECT, METADATA, protocol='x')
