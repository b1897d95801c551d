"""Smoke test of the benchmark suite: `benchmarks/run.py --quick` runs and
writes its report (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_suite_quick_mode(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)  # One device, as a user's machine.
  # Compiles are counted: no persistent cache hits.
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'benchmarks', 'run.py'), '--quick',
       f'--out={tmp_path / "results"}', f'--workdir={tmp_path / "work"}'],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=900,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  [name] = [n for n in os.listdir(tmp_path / 'results') if n.endswith('.json')]
  with open(tmp_path / 'results' / name) as f:
    results = json.load(f)
  assert {(r['model'], r['dtype']) for r in results['train_step']} == {
      (m, d) for m in ('wmmt', 'mdp') for d in ('float32', 'bfloat16')}
  for section in ('pipeline', 'end_to_end', 'evaluation', 'memory'):
    assert section in results
  assert results['end_to_end']['train_loop_compiles'] == 0
  # One compile per length bucket (the quick data fill both of its two).
  assert results['evaluation']['eval_compiles'] == len(
      results['evaluation']['length_buckets'])
  assert os.path.exists(tmp_path / 'results' / name.replace('.json', '.md'))
