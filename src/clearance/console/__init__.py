"""The console: the browser face of clearance for CRM managers and compliance officers.

Server-rendered pages (Jinja2) over the same Runtime and services the API uses, never HTTP to
itself and never its own SQL (what it reads lives in `store/console.py`). `api.create_app` mounts
it at `/` with `install(app)`."""

from clearance.console.app import install

__all__ = ["install"]
