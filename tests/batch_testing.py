"""Helpers shared by the input pipeline tests: take and compare batches."""

import itertools

import numpy as np


def take(ds, n):
  """The first `n` batches of a tf.data dataset, as numpy."""
  return list(itertools.islice(ds.as_numpy_iterator(), n))


def assert_batches_equal(a, b):
  """Two lists of batch dicts hold the same keys, dtypes and values."""
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
