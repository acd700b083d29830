"""auditor: measure the compute of PyTorch training runs and check it against AI rules."""
__version__ = "0.1.0"
