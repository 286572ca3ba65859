"""Scheduled campaigns: notify → review → approve before ClearanceRequiredBy → send to the approved.

Imports `domain`, `store`, `channels`, `outbound` and the shared modules; never `api`, `triggered`
or `runtime`.
"""
