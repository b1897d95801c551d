"""Experiment configs (configs/experiments/) and the sweep runner."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from configs import default
from configs import lavdf
from configs.experiments import base
from configs.experiments import table1
from configs.experiments import table4
from configs.experiments import table5
from configs.experiments import table6
from configs.experiments import table7
from wmmt_jax import config_lib
from wmmt_jax import paper_results
from wmmt_jax import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = {'table1': table1, 'table4': table4, 'table5': table5,
          'table6': table6, 'table7': table7}
# The fields each table may change, and nothing else.
INTENDED = {
    'table1': set(),
    'table4': {'loss.weight_m', 'loss.weight_v', 'loss.weight_a',
               'loss.dp_objective', 'eval.task'},
    'table5': {'loss.dp_function'},
    'table6': {'loss.dp_objective'},
    'table7': {'model.intra_fe', 'model.multitask', 'model.inter_fe',
               'loss.use_dp'},
}


def _flat(config):
  def walk(tree, prefix=''):
    for k, v in tree.items():
      if isinstance(v, dict):
        yield from walk(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', v
  return dict(walk(json.loads(config.to_json_best_effort())))


def _diff(a, b):
  a, b = _flat(a), _flat(b)
  assert a.keys() == b.keys()
  return {k for k in a if a[k] != b[k]}


@pytest.mark.parametrize('table', sorted(SWEEPS))
@pytest.mark.parametrize('arg', ['', 'synthetic', 'tiny'])
def test_every_row_builds_and_changes_only_its_fields(table, arg):
  module = SWEEPS[table]
  config = module.get_config(arg)
  rows = module.get_hyper(arg)
  assert [r['row'] for r in rows] == list(
      paper_results.TABLES[table]['rows'])
  for row in rows:
    row_config = base.apply(config, row)
    config_lib.validate(row_config, 4)
    changed = _diff(config, row_config)
    assert changed <= INTENDED[table], (row['row'], changed)
    assert changed == {k for k, v in base.overrides(row).items()
                       if _flat(config)[k] != v}
  # apply() copies: the base is untouched.
  assert _diff(config, module.get_config(arg)) == set()


def test_bases():
  assert _diff(base.get_config(''), lavdf.get_config()) == set()
  assert _diff(base.get_config('synthetic'), default.get_config()) == {
      'eval.protocol'}
  assert base.get_config('synthetic').eval.protocol == 'wmmt'
  assert _diff(base.get_config('tiny'), default.get_config('tiny')) == {
      'eval.protocol'}
  with pytest.raises(ValueError, match='unknown config arg'):
    base.get_config('lavdf')


def test_swept_fields_have_the_same_base_value_in_every_base():
  # The report matches runs to rows by these fields, whatever the base.
  keys = {k for m in SWEEPS.values() for r in m.get_hyper()
          for k in base.overrides(r)}
  values = [{k: _flat(base.get_config(a))[k] for k in keys}
            for a in base.ARGS]
  assert values[0] == values[1] == values[2]


def test_table7_adds_one_component_per_row():
  config = table7.get_config('tiny')
  rows = [base.apply(config, r) for r in table7.get_hyper()]
  assert not any((rows[0].model.intra_fe, rows[0].model.multitask,
                  rows[0].model.inter_fe, rows[0].loss.use_dp))
  for prev, row in zip(rows, rows[1:]):
    assert len(_diff(prev, row)) == 1
  assert _diff(rows[-1], config) == set()  # The last row is the full model.


def test_apply_refuses_unknown_fields():
  with pytest.raises(KeyError, match='model.nope'):
    base.apply(base.get_config('tiny'), {'row': 'x', 'model.nope': 1})


def _print_commands(tmp_path, *args):
  out = subprocess.run(
      [sys.executable, '-m', 'wmmt_jax.sweep', '--print_commands',
       f'--workdir_root={tmp_path}', *args], cwd=REPO, check=True,
      capture_output=True, text=True).stdout
  lines = out.splitlines()
  return lines[0::2], [shlex.split(c) for c in lines[1::2]]


def test_print_commands(tmp_path):
  (tmp_path / 'baseline').mkdir()
  (tmp_path / 'baseline' / 'results.json').write_text('{}')
  comments, commands = _print_commands(
      tmp_path, '--sweep=configs/experiments/table7.py',
      '--config_arg=synthetic', '--set', 'total_steps=300')
  assert comments[0] == '# baseline  # done: results.json exists'
  assert comments[1] == '# +IntraFE'
  workdirs = [next(a for a in c if a.startswith('--workdir=')) for c in
              commands]
  assert workdirs == [f'--workdir={tmp_path}/{d}' for d in (
      'baseline', 'intrafe', 'mtl', 'interfe', 'l_dp')]
  for command, row in zip(commands, table7.get_hyper()):
    assert command[1:4] == ['-m', 'wmmt_jax.main',
                            '--config=configs/experiments/table7.py:synthetic']
    overrides = [a for a in command if a.startswith('--config.')]
    assert overrides == [f'--config.{k}={v}' for k, v in
                         base.overrides(row).items()] + [
                             '--config.total_steps=300']


def test_print_commands_of_table4_evaluate_each_task(tmp_path):
  _, commands = _print_commands(tmp_path,
                                '--sweep=configs/experiments/table4.py')
  # "T_a with MTL" and "T_v with MTL" train alike but are scored on
  # different tasks: two runs.
  assert len(commands) == 4
  assert commands[0][3] == '--config=configs/experiments/table4.py'
  tasks = [[a for a in c if a.startswith('--config.eval.task=')]
           for c in commands]
  assert tasks == [['--config.eval.task=a'], ['--config.eval.task=v']] * 2


def test_plan_rows_and_errors(tmp_path):
  runs = sweep.plan('configs/experiments/table5.py', 'tiny', str(tmp_path),
                    sets=['config.seed=3'], rows=['cosine'])
  assert [(n, w) for n, w, _ in runs] == [('cosine',
                                           f'{tmp_path}/cosine')]
  assert runs[0][2][-2:] == ['--config.loss.dp_function=cosine',
                             '--config.seed=3']
  with pytest.raises(ValueError, match='KEY=VALUE'):
    sweep.plan('configs/experiments/table5.py', '', str(tmp_path),
               sets=['total_steps'])
  with pytest.raises(ValueError, match='no such row'):
    sweep.plan('configs/experiments/table5.py', '', str(tmp_path),
               rows=['nope'])
  with pytest.raises(FileNotFoundError):
    sweep.plan('configs/experiments/nope.py', '', str(tmp_path))


def test_run_skips_finished_rows(tmp_path):
  for row in table1.get_hyper():
    (tmp_path / sweep.slug(row['row'])).mkdir()
    (tmp_path / sweep.slug(row['row']) / 'results.json').write_text('{}')
  out = subprocess.run(
      [sys.executable, '-m', 'wmmt_jax.sweep', f'--workdir_root={tmp_path}',
       '--sweep=configs/experiments/table1.py', '--config_arg=tiny'],
      cwd=REPO, check=True, capture_output=True, text=True).stdout
  assert 'WMMT: skipped' in out
