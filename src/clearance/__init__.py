"""clearance: a conditional-execution engine for customer campaigns.

The two flows live in `scheduled/` and `triggered/`, built and started by `runtime`; `api`, `cli`
and `demo` are the entry points; `integrator/` is the operator's side. This module imports nothing.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
