"""The official evaluator's compiled core, for side-by-side checks.

The `avdeepfake1m` package's `ap_ar_1d` is a Rust extension,
`avdeepfake1m/_evaluation*.so`, that needs nothing but Python; the package's
`__init__` imports torch, lightning and opencv (and numpy < 2) for other
tools. Loading the extension file directly skips all of that, so tests and
`benchmarks/eval_benchmark.py` can compare against it in this environment.
It is never needed to score anything.
"""

import glob
import importlib.machinery
import importlib.util
import os

# Where to look first: a path to the extension file, or to a directory with
# it (e.g. a `pip install --target DIR --no-deps avdeepfake1m`).
ENV_VAR = 'WMMT_OFFICIAL_EVALUATOR'


def find_extension(path=None):
  """Path of the official `_evaluation` extension, or None.

  Looks at `path`, then `$WMMT_OFFICIAL_EVALUATOR`, then an installed
  `avdeepfake1m` package (found without importing it).

  Args:
    path: the extension file, or a directory holding it or holding the
      `avdeepfake1m` package.
  """
  candidates = [p for p in (path, os.environ.get(ENV_VAR)) if p]
  try:
    spec = importlib.util.find_spec('avdeepfake1m')
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    candidates.extend(spec.submodule_search_locations)
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
    for pattern in ('_evaluation*.so', '_evaluation*.pyd',
                    os.path.join('avdeepfake1m', '_evaluation*.so')):
      found = sorted(glob.glob(os.path.join(candidate, pattern)))
      if found:
        return found[0]
  return None


def load(path=None):
  """The official extension module (with `ap_ar_1d`), or None if not found.

  Its call is `ap_ar_1d(predictions_json, metadata_json, file_key,
  segments_key, fps, ap_ious, ar_ns, ar_ious)` on file paths; it panics on
  an empty proposal list and on a metadata file missing from the
  predictions (DESIGN.md section 5).

  Args:
    path: see `find_extension`.
  """
  found = find_extension(path)
  if found is None:
    return None
  # The module initialises as `_evaluation`, whatever the package around it.
  name = 'avdeepfake1m._evaluation'
  loader = importlib.machinery.ExtensionFileLoader(name, found)
  spec = importlib.util.spec_from_file_location(name, found, loader=loader)
  module = importlib.util.module_from_spec(spec)
  loader.exec_module(module)
  return module
