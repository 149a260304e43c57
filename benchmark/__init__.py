"""pebench: a benchmark suite for parameter-efficient transfer learning of Vision Transformers.

Importing :mod:`pebench` is cheap: torch and timm are imported only by the modules that need
them (``pebench.report.leaderboard`` never does).
"""

__version__ = "0.1.0"
