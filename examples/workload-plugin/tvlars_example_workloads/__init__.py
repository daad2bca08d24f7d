"""An example tvlars workload plugin: the ``rings`` dataset and the ``resmlp`` model (see README.md)."""
