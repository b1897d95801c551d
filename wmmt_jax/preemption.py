"""Preemption: on SIGTERM, training saves the current step and stops.

One process: a SIGTERM handler sets a flag that the train loop reads after
each step. Reading it is a host-side bool, so no device sync is added and
dispatch stays asynchronous.

Several processes (`jax.distributed.initialize`): JAX's preemption service
already catches the SIGTERM that any process receives and agrees with the
others on a step at which all of them save
(`multihost_utils.reached_preemption_sync_point`, reached through Orbax's
`CheckpointManager.reached_preemption`). A Python handler there would replace
JAX's and let processes disagree on the step (a collective save that never
completes), so none is installed.
"""

import signal
import threading

import jax

# The status a shell reports for a process ended by SIGTERM. Not 0: a job
# controller or a retry loop reads 0 as "the run finished" and would not
# restart it.
EXIT_CODE = 128 + signal.SIGTERM


class Preempted(Exception):
  """Training stopped on a preemption notice after saving `step`."""

  def __init__(self, step, checkpoint_dir):
    self.step = step
    self.checkpoint_dir = checkpoint_dir
    super().__init__(
        f'Preempted: saved checkpoint step {step} in {checkpoint_dir} and '
        'stopped. Run the same command again to resume from it.')


class PreemptionWatcher:
  """Context manager that notes a preemption notice for the train loop.

  Usage:

    with PreemptionWatcher(checkpoint_manager) as watcher:
      for step in ...:
        ...
        if watcher.reached(step):
          save and stop

  Call `reached` at every step on every process (the multi-process sync
  protocol needs it).
  """

  def __init__(self, checkpoint_manager):
    self._mngr = checkpoint_manager
    self._signum = None
    self._previous = None

  def _handler(self, signum, frame):
    del frame
    self._signum = signum

  def __enter__(self):
    # Signal handlers can only be set from the main thread; elsewhere (a
    # notebook's worker thread) SIGTERM keeps its default action.
    if (jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False

  def reached(self, step):
    """True if training should save `step` and stop."""
    if jax.process_count() == 1:
      return self._signum is not None
    return self._mngr.reached_preemption(step)
