"""Parameter initialisers."""

import flax.linen as nn

# PyTorch's default for Linear and Conv1d weights (kaiming_uniform with
# a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as MDP's layers start.
# It also compiles much faster on CPU than Flax's truncated-normal default.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                        'uniform')
