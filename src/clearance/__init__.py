"""clearance: a conditional-execution engine for customer campaigns."""

__version__ = "0.1.0"
__all__ = ["__version__"]
