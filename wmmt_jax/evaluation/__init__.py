"""wmmt_jax evaluation: proposals, metrics and result files (numpy only).

`ap_ar(predictions, metadata, protocol=...)` scores in-memory predictions
with the official AV-Deepfake1M / LAV-DF algorithm; the training evaluation
and the `wmmt-eval` command line use the same code (`metrics.py`).
"""

from wmmt_jax.evaluation.metrics import ap_ar
from wmmt_jax.evaluation.metrics import EvaluationWarning
from wmmt_jax.evaluation.metrics import PROTOCOLS
from wmmt_jax.evaluation.ragged import InputError

__all__ = ['ap_ar', 'EvaluationWarning', 'InputError', 'PROTOCOLS']
