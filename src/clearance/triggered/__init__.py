"""Triggered campaigns: event → matching campaigns → gateway decision within the budget → send.

Imports `domain`, `store`, `channels`, `outbound` and the shared modules; never `api`, `scheduled`
or `runtime`.
"""
