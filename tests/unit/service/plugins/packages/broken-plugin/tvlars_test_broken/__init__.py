"""A plugin whose import fails, as one with a missing dependency does."""

import tvlars_test_a_module_that_is_not_installed  # noqa: F401


def load(data_dir):
    raise AssertionError("never imported")
