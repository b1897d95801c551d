"""wmmt_jax models."""

from wmmt_jax.models.mdp import MDP
from wmmt_jax.models.tppa import TPPA
from wmmt_jax.models.wmmt import WMMT
from wmmt_jax.models.wmmt import expert_select
