"""Counts XLA compilations, to log how many a training run and an evaluation cost.

A listener on JAX's backend-compile event (`jax.monitoring`) counts every
compilation in the process; a cache hit of the persistent compilation cache
compiles nothing and is not counted.
"""

import threading

import jax

_EVENT = '/jax/core/compile/backend_compile_duration'
_lock = threading.Lock()
_count = 0
_installed = False


def _listener(event, duration_secs, **kwargs):
  del duration_secs, kwargs
  global _count
  if event == _EVENT:
    with _lock:
      _count += 1


def count():
  """XLA compilations in this process since the first call."""
  global _installed
  with _lock:
    if not _installed:
      jax.monitoring.register_event_duration_secs_listener(_listener)
      _installed = True
    return _count
