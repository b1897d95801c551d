"""wmmt_jax: weakly supervised multimodal temporal forgery localization in JAX."""

import setuptools

setuptools.setup(
    name='wmmt_jax',
    version='0.1.0',
    description=('WMMT and MDP in JAX/Flax: weakly supervised audio-visual '
                 'temporal forgery localization.'),
    packages=setuptools.find_packages(include=['wmmt_jax', 'wmmt_jax.*',
                                               'input_pipeline',
                                               'input_pipeline.*']),
    python_requires='>=3.11',
    install_requires=[
        'absl-py>=2.1',
        'clu>=0.0.12',
        'flax>=0.11.2',
        'jax>=0.7.1',
        'ml-collections>=1.1.0',
        'numpy>=2.0',
        'optax>=0.2.5',
        'orbax-checkpoint>=0.11.20',
        'scipy>=1.12',
        'tensorboard>=2.19',
        'tensorflow-cpu>=2.19',
        'tensorflow-datasets>=4.9.9',
    ],
    extras_require={
        'test': ['pytest>=8.0', 'chex>=0.1.90'],
        # Only to read PyTorch .pth checkpoints (wmmt_jax.convert).
        'torch': ['torch>=2.6'],
        # Plots of a run and of `wmmt_jax.predict --png` (wmmt_jax/plots.py).
        'viz': ['matplotlib>=3.8', 'scikit-learn>=1.5'],
    },
    entry_points={'console_scripts': ['wmmt-eval = wmmt_jax.evaluate:run']},
)
