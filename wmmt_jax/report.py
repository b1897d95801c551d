"""Tables of experiment results laid out as the WMMT paper's (Tables I, IV-VII).

  python -m wmmt_jax.report workdirs/table7 [more dirs or workdirs] \
      [--csv results.csv] [--out report.md] [--tables table7]

Every directory under the arguments that holds a `results.json` is a run;
its `config.json` says which row of which table it is (the fields the sweeps
of configs/experiments/ vary must equal that row's values, the others' base
values), on which dataset, split and protocol. A run can fill rows of
several tables (the full model is Table I's WMMT row, Table V's MSE row, ...).

The paper's numbers (`paper_results`) stand beside ours, with the
difference, only where the setting is the paper's: LAV-DF, test split, all
classes, the `wmmt` metrics (mAP@0.1:0.7, AR@20,10,5,2). Runs in any other
setting (e.g. the synthetic data) get their own table without paper column,
and the paper's rows follow it as a separate reference block.
"""

import collections
import csv
import functools
import importlib
import io
import json
import os
import sys

from absl import app
from absl import flags
import numpy as np

from wmmt_jax import paper_results
from wmmt_jax import workdir as workdir_lib

FLAGS = flags.FLAGS

TABLES = ('table1', 'table4', 'table5', 'table6', 'table7')
# Config fields that do not change what a run measures (how long it logs,
# saves, where the data lives); every other difference from the base is
# listed under the table.
_IGNORED_KEYS = (
    'checkpoint_every_steps', 'keep_checkpoints', 'log_every_steps',
    'eval_every_steps', 'skip_nonfinite_updates',
    'resume_allow_config_changes', 'dataset.root', 'dataset.prefetch',
    'eval.batch_size', 'eval.extra_protocols', 'total_steps')
_PRUNE = {'checkpoints', 'best', 'data', 'plots'}

Run = collections.namedtuple('Run', 'workdir config results setting')


def _repo_root():
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiments(name):
  """configs/experiments/<name>.py (imported from the repository root)."""
  if _repo_root() not in sys.path:
    sys.path.insert(0, _repo_root())
  return importlib.import_module(f'configs.experiments.{name}')


def _base():
  return _experiments('base')


def load_sweeps(tables=TABLES):
  """`{table: [row dict]}` from configs/experiments/<table>.py."""
  return {t: _experiments(t).get_hyper() for t in tables}


def _column(table, key):
  """A swept field's header: the sweep's `COLUMN_NAMES`, or its last part."""
  names = getattr(_experiments(table), 'COLUMN_NAMES', {})
  return names.get(key, key.split('.')[-1])


@functools.lru_cache(maxsize=None)
def _base_json(arg):
  """The flat JSON of a base config (callers must not modify it)."""
  base = _base()
  return workdir_lib.flatten(json.loads(base.get_config(arg).to_json_best_effort()))


def _base_arg(config):
  """Which base of configs/experiments/base.py a run's config came from."""
  if config.get('dataset.name') != 'synthetic':
    return ''
  return 'tiny' if config.get('dataset.num_frames') == 32 else 'synthetic'


def find_runs(paths):
  """`[(workdir, config dict (flat), results dict)]` under `paths`.

  Directories with a `results.json` but no `config.json` are skipped with
  a warning (their row cannot be known).
  """
  found = []
  for path in paths:
    if not os.path.isdir(path):
      raise FileNotFoundError(f'{path}: not a directory.')
    for directory, subdirs, files in os.walk(path):
      subdirs[:] = sorted(d for d in subdirs if d not in _PRUNE)
      if 'results.json' not in files:
        continue
      config_path = os.path.join(directory, 'config.json')
      if not os.path.exists(config_path):
        print(f'warning: {directory} has results.json but no config.json; '
              'skipped.', file=sys.stderr)
        continue
      with open(config_path) as f:
        config = workdir_lib.flatten(json.load(f))
      with open(os.path.join(directory, 'results.json')) as f:
        results = json.load(f)
      found.append((directory, config, results))
  return found


def metrics_of(results, protocol):
  """`{'ap': {iou str: %}, 'map', 'ar': {n str: %}, 'mean_ar'}` of a protocol.

  From the run's main protocol or its extra ones; None if it has neither.
  """
  if results.get('protocol') == protocol:
    block = results
  else:
    block = results.get('protocols', {}).get(protocol)
  if not block:
    return None
  ap = {k: 100.0 * v for k, v in block['ap'].items()}
  ar = {k: 100.0 * v for k, v in block['ar'].items()}
  return {'ap': ap, 'map': float(np.mean(list(ap.values()))), 'ar': ar,
          'mean_ar': float(np.mean(list(ar.values())))}


def setting_of(config, results):
  """`(dataset, eval split, eval subset, protocol)` of a run.

  The protocol is the paper's (`wmmt`) when the run scored it, as main or
  extra protocol; else the run's main one.
  """
  protocol = results.get('protocol', '?')
  if metrics_of(results, paper_results.PROTOCOL) is not None:
    protocol = paper_results.PROTOCOL
  return (config.get('dataset.name', '?'), config.get('dataset.eval_split',
                                                      '?'),
          config.get('dataset.eval_subset', 'all'), protocol)


def comparable(setting):
  """Whether a run's numbers may stand beside the paper's."""
  return setting == (paper_results.DATASET, paper_results.EVAL_SPLIT, 'all',
                     paper_results.PROTOCOL)


def swept_keys(sweeps):
  """Every config key some row of some table sets, sorted."""
  base = _base()
  return sorted({k for rows in sweeps.values() for row in rows
                 for k in base.overrides(row)})


def row_of(config, rows, keys, base_values):
  """The names of `rows` whose values `config` has in every swept key.

  Args:
    config: a run's flat config.
    rows: one table's sweep rows.
    keys: `swept_keys` of all tables: a run that differs from a row in a key
      another table varies is not that row.
    base_values: flat base config (the values of keys a row leaves alone).
  """
  base = _base()
  if config.get('model.name', 'wmmt') != 'wmmt':
    return []
  names = []
  for row in rows:
    expected = dict(base_values, **base.overrides(row))
    if all(config.get(k) == expected[k] for k in keys):
      names.append(row[base.ROW_KEY])
  return names


def other_differences(config, keys):
  """`k=v` of fields that differ from the run's base, beyond the swept ones."""
  base_values = _base_json(_base_arg(config))
  skip = set(keys) | set(_IGNORED_KEYS)
  return [f'{k}={config[k]!r}' for k in sorted(config)
          if k in base_values and k not in skip and config[k] != base_values[k]]


def _fmt(x):
  return '' if x is None else f'{x:.2f}'


def _value_cell(value):
  if isinstance(value, bool):
    return '✓' if value else ''
  return str(value)


def _metric_columns(protocol_metrics):
  ap_keys = list(protocol_metrics['ap'])
  ar_keys = list(protocol_metrics['ar'])
  return ap_keys, ar_keys


def _paper_metrics():
  """Columns of the paper's protocol, as `metrics_of` keys them."""
  spec_ap = [str(t) for t in paper_results.AP_IOUS]
  spec_ar = [str(n) for n in paper_results.AR_NS]
  return spec_ap, spec_ar


def _as_line(m, ap_keys, ar_keys):
  """Metric values in column order; `m` keys may be floats or strings."""
  if m is None:
    return [None] * (len(ap_keys) + len(ar_keys) + 2)
  ap = {str(k): v for k, v in m['ap'].items()}
  ar = {str(k): v for k, v in m['ar'].items()}
  return ([ap.get(k) for k in ap_keys] + [m['map']] +
          [ar.get(k) for k in ar_keys] + [m['mean_ar']])


def _markdown(header, lines):
  out = ['| ' + ' | '.join(header) + ' |',
         '|' + '|'.join('---' for _ in header) + '|']
  out += ['| ' + ' | '.join(line) + ' |' for line in lines]
  return '\n'.join(out)


def _describe(setting, steps):
  dataset, split, subset, protocol = setting
  steps = ', '.join(str(s) for s in sorted(set(steps)))
  return (f'dataset **{dataset}** (eval split {split}, classes {subset}), '
          f'protocol **{protocol}**, steps {steps}')


def build(paths, tables=TABLES):
  """The report: `(markdown, csv rows)` for the runs under `paths`."""
  sweeps = load_sweeps(tables)
  all_sweeps = load_sweeps(TABLES)
  keys = swept_keys(all_sweeps)
  runs = [Run(w, c, r, setting_of(c, r)) for w, c, r in find_runs(paths)]
  md, csv_rows, matched = [], [], set()
  for table in tables:
    rows = sweeps[table]
    base = _base()
    table_keys = [k for k in dict.fromkeys(
        k for row in rows for k in base.overrides(row))]
    info = paper_results.TABLES[table]
    by_setting = collections.defaultdict(lambda: collections.defaultdict(list))
    for run in runs:
      base_values = _base_json(_base_arg(run.config))
      for name in row_of(run.config, rows, keys, base_values):
        by_setting[run.setting][name].append(run)
        matched.add(run.workdir)
    md.append(f'## {info["title"]}\n')
    if not by_setting:
      md.append('No runs of this table found.\n')
    for setting, runs_by_row in by_setting.items():
      # Table IV's rows are evaluated in a way no config expresses yet.
      with_paper = (comparable(setting) and
                    table not in paper_results.NOT_COMPARABLE)
      first = next(iter(runs_by_row.values()))[0]
      if setting[3] == paper_results.PROTOCOL:
        ap_keys, ar_keys = _paper_metrics()
      else:
        m = metrics_of(first.results, setting[3])
        ap_keys, ar_keys = _metric_columns(m)
      steps = [r.results.get('step') for rs in runs_by_row.values()
               for r in rs]
      if with_paper:
        why = "Paper: the paper's numbers (same setting); Δ: ours − paper."
      elif comparable(setting):
        why = (f'Not comparable with the paper: '
               f'{paper_results.NOT_COMPARABLE[table]} No paper column; the '
               "paper's rows are listed below for reference only.")
      else:
        why = ("Not the paper's setting (LAV-DF test, protocol wmmt): no "
               "paper column; the paper's rows are listed below for "
               'reference only.')
      md.append(f'Setting: {_describe(setting, steps)}. {why}\n')
      header = (['row'] + [_column(table, k) for k in table_keys] +
                (['source'] if with_paper else []) +
                [f'AP@{k}' for k in ap_keys] + ['mAP'] +
                [f'AR@{k}' for k in ar_keys] + ['AR avg', 'acc', 'AUC',
                                                'steps', 'workdir'])
      lines, notes = [], []
      for row in rows:
        name = row[base.ROW_KEY]
        cells = [name] + [_value_cell(row.get(k, None) if k in row else
                                      _base_json('')[k]) for k in table_keys]
        paper = paper_results.paper_row(table, name)
        if with_paper:
          lines.append(cells + ['paper'] + [
              _fmt(x) for x in _as_line(paper, ap_keys, ar_keys)] +
                       ['', '', '', ''])
        for run in runs_by_row.get(name, []):
          ours = metrics_of(run.results, setting[3])
          values = _as_line(ours, ap_keys, ar_keys)
          extra = [_fmt(100.0 * run.results['video_accuracy'])
                   if 'video_accuracy' in run.results else '',
                   _fmt(100.0 * run.results['auc'])
                   if 'auc' in run.results else '',
                   str(run.results.get('step', '')), run.workdir]
          lines.append(cells + (['ours'] if with_paper else []) +
                       [_fmt(x) for x in values] + extra)
          csv_rows.append(_csv_row(table, name, 'ours', setting, run,
                                   ap_keys, ar_keys, values))
          if with_paper and paper:
            delta = [None if a is None or b is None else a - b for a, b in
                     zip(values, _as_line(paper, ap_keys, ar_keys))]
            lines.append(cells + ['Δ'] + [
                '' if d is None else f'{d:+.2f}' for d in delta] +
                         ['', '', '', run.workdir])
            csv_rows.append(_csv_row(table, name, 'delta', setting, run,
                                     ap_keys, ar_keys, delta))
          diffs = other_differences(run.config, keys)
          if diffs:
            notes.append(f'- {run.workdir}: also differs from the base in '
                         + ', '.join(diffs))
        if with_paper and paper:
          csv_rows.append(_csv_row(table, name, 'paper', setting, None,
                                   ap_keys, ar_keys,
                                   _as_line(paper, ap_keys, ar_keys)))
      md.append(_markdown(header, lines) + '\n')
      if notes:
        md.append('\n'.join(notes) + '\n')
      if with_paper and table in paper_results.NOTES:
        md.append(f'Note on the paper\'s numbers: '
                  f'{paper_results.NOTES[table]}\n')
    if (not by_setting or table in paper_results.NOT_COMPARABLE or
        any(not comparable(s) for s in by_setting)):
      md.append(_paper_block(table, rows, table_keys))
  unmatched = [r.workdir for r in runs if r.workdir not in matched]
  if unmatched and tables == TABLES:
    md.append('## Runs that are no row of these tables\n\n' + '\n'.join(
        f'- {w}' for w in unmatched) + '\n')
  return '\n'.join(md), csv_rows


def _paper_block(table, rows, table_keys):
  """The paper's rows of a table (LAV-DF, protocol wmmt), as printed."""
  base = _base()
  ap_keys, ar_keys = _paper_metrics()
  header = (['row'] + [_column(table, k) for k in table_keys] +
            [f'AP@{k}' for k in ap_keys] + ['mAP'] +
            [f'AR@{k}' for k in ar_keys] + ['AR avg'])
  lines = []
  for row in rows:
    name = row[base.ROW_KEY]
    paper = paper_results.paper_row(table, name)
    lines.append([name] + [_value_cell(row.get(k, _base_json('')[k]))
                           for k in table_keys] +
                 [_fmt(x) for x in _as_line(paper, ap_keys, ar_keys)])
  text = (f"Paper ({paper_results.DATASET} {paper_results.EVAL_SPLIT}, "
          f"protocol {paper_results.PROTOCOL}; reference only):\n\n"
          + _markdown(header, lines) + '\n')
  if table in paper_results.NOTES:
    text += f'\nNote: {paper_results.NOTES[table]}\n'
  return text


def _csv_row(table, name, source, setting, run, ap_keys, ar_keys, values):
  row = {'table': table, 'row': name, 'source': source,
         'dataset': setting[0], 'eval_split': setting[1],
         'eval_subset': setting[2], 'protocol': setting[3],
         'comparable_with_paper': (comparable(setting) and
                                   table not in paper_results.NOT_COMPARABLE),
         'steps': run.results.get('step', '') if run else '',
         'workdir': run.workdir if run else ''}
  names = ([f'ap@{k}' for k in ap_keys] + ['map'] +
           [f'ar@{k}' for k in ar_keys] + ['mean_ar'])
  row.update({n: '' if v is None else round(v, 4)
              for n, v in zip(names, values)})
  if run and source == 'ours':
    row['video_accuracy'] = round(100.0 * run.results.get(
        'video_accuracy', float('nan')), 4)
    row['auc'] = round(100.0 * run.results.get('auc', float('nan')), 4)
  return row


def write_csv(path, rows):
  """Writes the CSV rows (columns: the union, in first-seen order)."""
  columns = list(dict.fromkeys(k for row in rows for k in row))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, columns, restval='')
  writer.writeheader()
  writer.writerows(rows)
  with open(path, 'w', newline='') as f:
    f.write(buf.getvalue())



def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('csv', '', 'Also write the tables as CSV to this '
                      'file.')
  flags.DEFINE_string('out', '', 'Write the markdown here (default: '
                      'stdout).')
  flags.DEFINE_list('tables', [], 'Only these tables (table1, table4, ...).')


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('Give one or more directories holding workdirs.')
  tables = tuple(FLAGS.tables) or TABLES
  bad = [t for t in tables if t not in TABLES]
  if bad:
    raise app.UsageError(f'--tables: unknown {bad}; expected some of '
                         f'{TABLES}.')
  text, rows = build(paths, tables)
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      f.write(text)
  else:
    print(text)
  if FLAGS.csv:
    write_csv(FLAGS.csv, rows)


if __name__ == '__main__':
  define_flags()
  app.run(main)
