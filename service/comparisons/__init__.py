"""Fair optimizer comparisons: statistics on stored results (``stats``), the result's shape (``result``) and its
report (``report``). Plain data in, plain data out: the REST resource and the worker feed them from storage."""
