"""Experiment configs: the rows of the WMMT paper's Tables I, IV, V, VI, VII.

Each `tableN.py` is a config file (`get_config(arg)`: the base of `base.py`)
with a sweep beside it (`get_hyper(arg)`: one dict of config overrides per
row of the paper's table, plus the row's name under `row`). Run a sweep with
`python -m wmmt_jax.sweep --sweep=configs/experiments/table7.py ...` and
collect the results with `python -m wmmt_jax.report`.
"""
