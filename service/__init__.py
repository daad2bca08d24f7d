"""tvlars-tune's service side: the study engine (Ray Tune + Optuna), the REST API, the worker and the CLI."""
