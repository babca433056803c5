"""HER2 alert consumer: classify HER2 pathology results and publish treatment alerts."""

__version__ = "0.1.0"
