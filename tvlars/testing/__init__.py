"""Checks of the optimizers against the official code (as ``torch.testing`` is torch's): ``official`` holds the
official TVLARS/LARS/LAMB update rules as published (KhoiDOO/tvlars), ``cases`` the inputs and step helpers the
tests, the optimizer-step benchmark and the GPU check share. Needs only torch, like the rest of ``tvlars``."""
