"""The report of experiment workdirs (wmmt_jax/report.py)."""

import csv
import json

import numpy as np

from configs.experiments import base
from configs.experiments import table7
from wmmt_jax import paper_results
from wmmt_jax import report


def _results(ap, ar, protocol='wmmt'):
  ious = paper_results.AP_IOUS if protocol == 'wmmt' else (0.5, 0.75, 0.95)
  ns = paper_results.AR_NS if protocol == 'wmmt' else (100, 50, 20, 10)
  return {'ap': {str(t): ap for t in ious}, 'ar': {str(n): ar for n in ns},
          'video_accuracy': 0.5, 'auc': 0.75, 'protocol': protocol,
          'step': 300}


def _workdir(path, config, results):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(config.to_json_best_effort())
  (path / 'results.json').write_text(json.dumps(results))
  return str(path)


def _lines(text, prefix):
  return [l for l in text.splitlines() if l.startswith(prefix)]


def test_synthetic_ladder_has_no_paper_column(tmp_path):
  config = table7.get_config('synthetic')
  rows = table7.get_hyper()
  _workdir(tmp_path / 'a' / 'baseline', base.apply(config, rows[0]),
           _results(0.5, 0.25))
  _workdir(tmp_path / 'b' / 'full', base.apply(config, rows[-1]),
           _results(0.75, 0.5))
  text, csv_rows = report.build([str(tmp_path)], ('table7',))
  header = ('| row | IntraFE | MTL | InterFE | L_dp | AP@0.1 | AP@0.2 | '
            'AP@0.3 | AP@0.4 | AP@0.5 | AP@0.6 | AP@0.7 | mAP | AR@20 | '
            'AR@10 | AR@5 | AR@2 | AR avg | acc | AUC | steps | workdir |')
  assert header in text
  assert 'dataset **synthetic**' in text and 'no paper column' in text
  ours = _lines(text, '| baseline |  |  |  |  | 50.00')
  assert ours == ['| baseline |  |  |  |  | ' + '50.00 | ' * 8 +
                  '25.00 | ' * 5 + f'50.00 | 75.00 | 300 | '
                  f'{tmp_path}/a/baseline |']
  assert _lines(text, '| +L_dp | ✓ | ✓ | ✓ | ✓ | 75.00')
  # The paper's rows follow, as reference only.
  assert 'reference only' in text
  assert _lines(text, '| +L_dp | ✓ | ✓ | ✓ | ✓ | 92.28 | 86.67 | 80.40')
  assert not any(r['source'] == 'paper' for r in csv_rows)
  assert [r['row'] for r in csv_rows] == ['baseline', '+L_dp']


def test_lavdf_run_stands_beside_the_paper(tmp_path):
  config = table7.get_config('')
  config.dataset.root = '/data/LAV-DF'
  full = _workdir(tmp_path / 'full', config, _results(0.7, 0.8))
  text, csv_rows = report.build([str(tmp_path)])
  # The full model is a row of Tables I, V, VI and VII.
  for title in ('Table I:', 'Table V:', 'Table VI:', 'Table VII:'):
    section = text.split(title)[1].split('\n## ')[0]
    assert "Paper: the paper's numbers" in section
  vii = text.split('Table VII:')[1]
  assert _lines(vii, '| +L_dp | ✓ | ✓ | ✓ | ✓ | paper | 92.28 | 86.67')
  assert _lines(vii, '| +L_dp | ✓ | ✓ | ✓ | ✓ | ours | 70.00')
  delta = _lines(vii, '| +L_dp | ✓ | ✓ | ✓ | ✓ | Δ |')[0].split(' | ')
  assert delta[6:9] == ['-22.28', '-16.67', '-10.40']
  assert delta[13] == f'{70 - 73.27:+.2f}'  # mAP against the printed Avg.
  # Rows without a run show the paper's numbers only.
  assert _lines(vii, '| baseline |  |  |  |  | paper | 62.20')
  assert not _lines(vii, '| baseline |  |  |  |  | ours')
  assert 'Table IV' in text and 'No runs of this table found.' in (
      text.split('Table IV:')[1].split('\n## ')[0])
  path = tmp_path / 'r.csv'
  report.write_csv(str(path), csv_rows)
  rows = list(csv.DictReader(path.open()))
  ours = [r for r in rows if r['table'] == 'table7' and r['source'] == 'ours']
  assert len(ours) == 1 and ours[0]['workdir'] == full
  assert ours[0]['comparable_with_paper'] == 'True'
  assert float(ours[0]['ap@0.5']) == 70.0
  d = [r for r in rows if r['table'] == 'table5' and r['source'] == 'delta']
  assert np.isclose(float(d[0]['map']), 70 - 74.91)  # Table V's printed Avg.


def test_rows_are_told_apart_by_every_swept_field(tmp_path):
  config = table7.get_config('synthetic')
  config.loss.dp_objective = 'a'  # Table VI's T_a row: not Table V's MSE.
  config.model.tppa_norm = 'none'  # Not swept: listed as a difference.
  _workdir(tmp_path / 'obj_a', config, _results(0.6, 0.6))
  text, _ = report.build([str(tmp_path)])
  assert 'No runs of this table found.' in text.split('Table V:')[1].split(
      '\n## ')[0]
  vi = text.split('Table VI:')[1].split('\n## ')[0]
  assert _lines(vi, '| T_a | a | 60.00')
  assert "also differs from the base in model.tppa_norm='none'" in vi


def test_other_protocols_and_unmatched_runs(tmp_path):
  config = table7.get_config('synthetic')
  config.eval.protocol = 'lavdf'
  _workdir(tmp_path / 'lavdf_protocol', config,
           _results(0.5, 0.5, protocol='lavdf'))
  mdp = table7.get_config('synthetic')
  mdp.model.name = 'mdp'
  _workdir(tmp_path / 'mdp', mdp, _results(0.1, 0.1))
  (tmp_path / 'no_config').mkdir()
  (tmp_path / 'no_config' / 'results.json').write_text('{}')
  text, _ = report.build([str(tmp_path)])
  vii = text.split('Table VII:')[1].split('\n## ')[0]
  assert 'protocol **lavdf**' in vii
  assert '| AP@0.5 | AP@0.75 | AP@0.95 | mAP | AR@100 |' in vii
  assert text.split('## Runs that are no row of these tables')[1].strip() == (
      f'- {tmp_path}/mdp')
