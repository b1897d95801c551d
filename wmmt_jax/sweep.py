"""Runs every row of an experiment sweep (configs/experiments/), in turn.

  python -m wmmt_jax.sweep --sweep=configs/experiments/table7.py \
      --config_arg=synthetic --workdir_root=workdirs/table7
  python -m wmmt_jax.sweep --sweep=configs/experiments/table5.py \
      --workdir_root=/runs/table5 --set dataset.root=/data/LAV-DF \
      --print_commands          # one shell command per row, for a scheduler

A sweep file has `get_config(arg)` (the base) and `get_hyper(arg)` (one
dict of config overrides per row, with the row's name under `row`). Each row
runs as `python -m wmmt_jax.main --config=SWEEP[:ARG] --workdir=ROOT/NAME
--config.KEY=VALUE ...`, the same command `--print_commands` prints: a
subprocess per row, not `train.train_and_evaluate` in this process, so that
what runs here is exactly what a cluster runs, every row starts from a fresh
JAX / XLA / tf.data state, and a row that fails (exit 1) or is preempted
(exit 143) is reported without stopping the others. Starting a process costs
seconds; a row trains for minutes to days.

Commands run from the repository root (sweep files import `configs.*`).
A row whose workdir already has `results.json` is skipped; one with a
checkpoint but no results is resumed (the same command). Rows with the same
overrides as an earlier row (e.g. Table IV's "T_a with MTL" and "T_v with
MTL", one training evaluated twice in the paper) share its workdir.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags



def repo_root(sweep_path):
  """The directory holding `configs/`, which sweep files import from."""
  return os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(sweep_path))))


def load_sweep(path):
  """The sweep file `path` as a module (needs `get_config` and `get_hyper`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--sweep={path}: no such file.')
  root = repo_root(path)
  if root not in sys.path:
    sys.path.insert(0, root)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'_sweep_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ('get_config', 'get_hyper'):
    if not hasattr(module, fn):
      raise ValueError(f'--sweep={path}: has no {fn}(arg); a sweep file '
                       'defines get_config (the base) and get_hyper (rows).')
  return module


def slug(name):
  """A row name as a directory name: '+IntraFE' -> 'intrafe', 'T_a only' ->
  't_a_only', 'T_a+T_v' -> 't_a+t_v'."""
  s = re.sub(r'[^a-z0-9_+.-]+', '_', name.lower()).strip('_')
  return s.lstrip('+') or 'row'


def format_value(value):
  """A config value as `--config.key=` parses it (bools True/False)."""
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(format_value(v) for v in value) + (
        ',)' if len(value) == 1 else ')')
  return str(value)


def parse_set(items):
  """`['a.b=1', ...]` -> `[('a.b', '1'), ...]`."""
  out = []
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ValueError(f'--set {item!r}: expected KEY=VALUE, e.g. '
                       'total_steps=300.')
    out.append((key.removeprefix('config.'), value))
  return out


def plan(sweep_path, config_arg, workdir_root, sets=(), rows=()):
  """The runs of a sweep: `[(row name, workdir, argv)]`, in order.

  Every row's config is built first (so a bad row fails before anything
  runs); rows with the overrides of an earlier row are left out (their
  workdir is the earlier one's).
  """
  module = load_sweep(sweep_path)
  from configs.experiments import base  # pylint: disable=g-import-not-at-top
  base_config = module.get_config(config_arg or None)
  hyper = module.get_hyper(config_arg or None)
  sets = parse_set(sets)
  config_flag = sweep_path + (f':{config_arg}' if config_arg else '')
  runs, seen, names = [], {}, set()
  for row in hyper:
    name = row.get(base.ROW_KEY)
    if not name:
      raise ValueError(f'--sweep={sweep_path}: a row without a '
                       f'{base.ROW_KEY!r} name: {row}.')
    base.apply(base_config, row)  # Raises on keys that are not fields.
    if rows and name not in rows and slug(name) not in rows:
      continue
    key = tuple(sorted((k, repr(v)) for k, v in
                       base.overrides(row).items()))
    if key in seen:
      continue
    seen[key] = name
    directory = slug(name)
    if directory in names:
      raise ValueError(f'--sweep={sweep_path}: two rows map to workdir '
                       f'{directory!r}; rename one.')
    names.add(directory)
    workdir = os.path.join(workdir_root, directory)
    argv = ['-m', 'wmmt_jax.main', f'--config={config_flag}',
            f'--workdir={workdir}']
    argv += [f'--config.{k}={format_value(v)}'
             for k, v in base.overrides(row).items()]
    argv += [f'--config.{k}={v}' for k, v in sets]
    runs.append((name, workdir, argv))
  if rows and not runs:
    raise ValueError(f'--rows={",".join(rows)}: no such row in {sweep_path}.')
  return runs


def is_done(workdir):
  return os.path.exists(os.path.join(workdir, 'results.json'))


def command_line(python, argv):
  return ' '.join(shlex.quote(a) for a in [python, *argv])


FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('sweep', None, 'Sweep file, e.g. '
                      'configs/experiments/table7.py.')
  flags.DEFINE_string('workdir_root', None, 'Each row runs in '
                      'WORKDIR_ROOT/<row name>.')
  flags.DEFINE_string('config_arg', '', "The sweep's config arg: '' (the "
                      "paper's LAV-DF setting), 'synthetic' or 'tiny'.")
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE: a config override passed '
                            'to every row as --config.KEY=VALUE (after the '
                            "row's own, so it wins), e.g. --set "
                            'total_steps=300.')
  flags.DEFINE_bool('print_commands', False, 'Print one shell command per row '
                    'and run nothing.')
  flags.DEFINE_list('rows', [], 'Only these rows (names or slugs); default '
                    'all.')
  flags.DEFINE_string('python', sys.executable, 'Python that runs each row.')
  flags.mark_flags_as_required(['sweep', 'workdir_root'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runs = plan(FLAGS.sweep, FLAGS.config_arg, FLAGS.workdir_root, FLAGS.set,
              FLAGS.rows)
  if FLAGS.print_commands:
    for name, workdir, args in runs:
      done = '  # done: results.json exists' if is_done(workdir) else ''
      print(f'# {name}{done}')
      print(command_line(FLAGS.python, args))
    return
  # `configs` is imported from the repository root, wherever we run.
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      filter(None, [repo_root(FLAGS.sweep), env.get('PYTHONPATH')]))
  failed = []
  for i, (name, workdir, args) in enumerate(runs, 1):
    if is_done(workdir):
      print(f'[{i}/{len(runs)}] {name}: skipped, {workdir}/results.json '
            'exists.', flush=True)
      continue
    print(f'[{i}/{len(runs)}] {name}: {command_line(FLAGS.python, args)}',
          flush=True)
    start = time.time()
    rc = subprocess.call([FLAGS.python, *args], env=env)
    print(f'[{i}/{len(runs)}] {name}: exit {rc} after '
          f'{time.time() - start:.0f} s.', flush=True)
    if rc:
      failed.append(f'{name} (exit {rc}, {workdir})')
      if rc in (-2, 130):  # Ctrl-C: stop the sweep too.
        break
  if failed:
    print('Failed rows: ' + '; '.join(failed) + '. Running the same command '
          'again resumes them.', flush=True)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
