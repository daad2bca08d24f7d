"""Fair optimizer comparisons, one module per concern: the records (``records``: submit, cancel, resume, a
comparison's studies), the worker's step from phase to phase (``machine``), planning after tuning (``reruns``: the
range check and the re-runs), the result from stored trials (``assembly``), its shape (``result``), the statistics
(``stats``) and the report (``report``)."""
