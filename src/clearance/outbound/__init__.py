"""Calls the server makes: where it may call (the allowlist), how a URL is read (`target`), the one
way out (`transport`, `async_transport`) and how what it sends is signed.

Of the engine it imports only `errors`; the flows and channels import it, it imports none of them.
"""
