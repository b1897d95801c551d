"""The launch scripts parse, say what to edit, and use main.py's flags."""

import os
import re
import subprocess

import pytest

from wmmt_jax import main  # Defines the flags.

_LAUNCH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'launch')
_SCRIPTS = sorted(os.listdir(_LAUNCH))


def test_all_four_scripts_exist():
  assert set(_SCRIPTS) >= {'local.sh', 'multiprocess_cpu.sh',
                           'slurm_gpu.sbatch', 'tpu_pod.sh'}


@pytest.mark.parametrize('name', _SCRIPTS)
def test_script_parses_and_matches_main_flags(name):
  path = os.path.join(_LAUNCH, name)
  subprocess.run(['bash', '-n', path], check=True)
  text = open(path).read()
  assert re.search(r'^# Edit:', text, re.M), f'{name}: no "# Edit:" header'
  # The `python -m wmmt_jax.main ...` command, continuation lines joined.
  joined = text.replace('\\\n', ' ')
  commands = [line for line in joined.splitlines()
              if 'wmmt_jax.main' in line and not line.lstrip().startswith('#')]
  assert commands, f'{name}: no wmmt_jax.main command'
  for command in commands:
    tail = command[command.index('wmmt_jax.main'):]
    for flag in re.findall(r'--([a-z_][a-z0-9_.]*)', tail):
      name_ = flag.split('.')[0]
      assert name_ in main.FLAGS, f'{name}: --{flag} is not a main.py flag'
