"""Faults that stop a run with a message that says it all.

`main` prints a `RunError`'s message without a traceback (the traceback goes
to the log at `-v 1`): each message names the file, step or directory at
fault and what to do next. Anything else is a bug and keeps its traceback.
"""


class RunError(Exception):
  """A fault that stops a run, explained by its message alone."""


class WorkdirError(RunError):
  """The workdir cannot be used: unwritable, full, or holds another run."""


class NonFiniteError(RunError, FloatingPointError):
  """A non-finite loss, gradient or parameter; nothing bad was saved."""


class InputDataError(RunError, ValueError):
  """An input file could not be read while training or evaluating."""
