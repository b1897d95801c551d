"""The data mesh and host-to-global batch conversion."""

import jax
import numpy as np

P = jax.sharding.PartitionSpec


def make_mesh():
  """A 1-D `('data',)` mesh over all devices of all processes."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(mesh):
  """Split on the first (batch) axis over 'data'."""
  return jax.sharding.NamedSharding(mesh, P('data'))


def replicated(mesh):
  """Replicated on every device."""
  return jax.sharding.NamedSharding(mesh, P())


def to_global(batch, mesh):
  """Process-local numpy batch -> global arrays split over 'data'.

  Each process passes its own rows; the global batch is their concatenation
  in process order.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


def to_host(tree):
  """Replicated (or fully addressable) arrays -> numpy, on every process.

  `jax.device_get` refuses arrays that span other processes' devices; a
  replicated one is whole on each local device, so its first local shard is
  the value.
  """
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if not x.sharding.is_fully_replicated:
      raise ValueError(f'to_host: a {x.shape} array split over processes; '
                       'only replicated ones can be read on each process.')
    return np.asarray(x.addressable_data(0))
  return jax.tree.map(get, tree)
