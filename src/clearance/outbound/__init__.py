"""Calls the server makes: where it may call (the allowlist) and how it signs what it sends.

Imports only `errors`; the flows and channels import it, it imports none of them.
"""
