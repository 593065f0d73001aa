"""Root of the test suite: its folder is on ``sys.path``, so tests import ``nets_testlib``."""
