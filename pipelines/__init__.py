"""Stage graph, Dask cluster and executor, mixing, publishing, stats and the `corpus` CLI.

Imports `synthetic` and `classifiers`; nothing imports `pipelines`.
"""

__version__ = "0.1.0"
