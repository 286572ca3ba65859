"""clearance serve · worker · migrate · keys create|list|revoke · demo · integrator serve"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clearance.clock import SystemClock, to_ms
from clearance.config import Settings
from clearance.errors import ClearanceError
from clearance.logs import configure_logging
from clearance.store import Store, open_store

if TYPE_CHECKING:
    from clearance.runtime import Runtime

log = logging.getLogger("clearance")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        help="sqlite:///path.db (default ./clearance.db) or "
        "postgresql://…; env CLEARANCE_DATABASE_URL",
    )
    p.add_argument("--timezone", help="site time zone for zone-less times (default UTC)")


def _settings(args: argparse.Namespace, **more: Any) -> Settings:
    return Settings.from_env(
        database_url=getattr(args, "database_url", None),
        timezone=getattr(args, "timezone", None),
        **more,
    )


def bootstrap(store: Store, settings: Settings) -> None:
    """CLEARANCE_BOOTSTRAP_API_KEY / CLEARANCE_BOOTSTRAP_USER=name:password, for scripting."""
    now = to_ms(SystemClock().now())
    if settings.bootstrap_api_key:
        store.create_api_key("admin", "bootstrap", now, key=settings.bootstrap_api_key)
    if settings.bootstrap_user:
        name, sep, password = settings.bootstrap_user.partition(":")
        if not sep or not name or not password:
            raise ClearanceError("CLEARANCE_BOOTSTRAP_USER must be name:password")
        store.upsert_user(name, password, "admin", now)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from clearance.api import create_app
    from clearance.api.app import tune_process
    from clearance.runtime import Runtime

    settings = _settings(args, host=args.host, port=args.port)
    runtime = Runtime.open(settings, SystemClock(), worker=not args.no_worker)
    bootstrap(runtime.store, settings)
    if args.workers > 1:
        return _serve_processes(args, runtime)
    app = create_app(runtime)
    log.info(
        "clearance serving on http://%s:%s (database: %s, worker: %s)",
        settings.host,
        settings.port,
        runtime.store.dialect,
        "off" if runtime.worker is None else "on",
    )
    tune_process()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
    runtime.store.close()
    return 0


def _serve_processes(args: argparse.Namespace, runtime: Runtime) -> int:
    """Several API processes on one port (they share nothing but the database); the scheduler
    runs once, in this supervising process (the API processes build their own runtimes)."""
    import uvicorn

    settings = runtime.settings
    os.environ["CLEARANCE_DATABASE_URL"] = settings.database_url
    os.environ["CLEARANCE_TIMEZONE"] = settings.timezone
    runtime.start_worker()
    log.info(
        "clearance serving on http://%s:%s with %d API processes (worker: %s)",
        settings.host,
        settings.port,
        args.workers,
        "off" if runtime.worker is None else "on",
    )
    try:
        uvicorn.run(
            "clearance.api.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_level="warning",
            access_log=False,
            log_config=None,
        )
    finally:
        runtime.stop_worker()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from clearance.runtime import Runtime

    settings = _settings(args)
    runtime = Runtime.open(settings, SystemClock(), worker=True)
    bootstrap(runtime.store, settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    assert runtime.worker is not None
    runtime.worker.run(stop)
    runtime.store.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_store(settings.database_url, migrate=False)
    applied = store.migrate()
    print(
        f"schema at version {store.db.schema_version()}"
        + (f" (applied {applied})" if applied else " (already current)")
    )
    store.close()
    return 0


def _audit(store: Store, action: str, target: str, **detail: Any) -> None:
    store.record_audit(to_ms(SystemClock().now()), "cli", action, target, detail)


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_store(settings.database_url)
    key_id, key = store.create_api_key(
        args.type, args.name, to_ms(SystemClock().now()), rate_limit_per_second=args.rate_limit
    )
    _audit(store, "key.create", key_id, type=args.type, name=args.name)
    print(key)
    print(f"({key_id}, {args.type}; shown once, store it now)", file=sys.stderr)
    store.close()
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = open_store(_settings(args).database_url)
    for k in store.list_api_keys():
        state = "revoked" if k["revoked_at"] is not None else "active"
        print(f"{k['key_id']}\t{k['access_type']}\t{state}\t{k['name']}")
    store.close()
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_store(settings.database_url)
    store.revoke_api_key(args.key_id, to_ms(SystemClock().now()))
    _audit(store, "key.revoke", args.key_id)
    print(
        f"revoked {args.key_id}; running servers refuse it within {settings.key_cache_seconds:g} s",
        file=sys.stderr,
    )
    store.close()
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    """A login user (the console's User and Password; also general/login). The password comes
    from CLEARANCE_NEW_PASSWORD or is asked for, never from the command line."""
    import getpass

    password = os.environ.get("CLEARANCE_NEW_PASSWORD") or getpass.getpass("Password: ")
    if len(password) < 8 or len(password) > 1000:
        raise ClearanceError("a password needs 8 to 1000 characters")
    if not args.name or len(args.name) > 200 or not args.name.isprintable() or ":" in args.name:
        raise ClearanceError("a user name is 1 to 200 printable characters without ':'")
    store = open_store(_settings(args).database_url)
    store.upsert_user(args.name, password, args.access, to_ms(SystemClock().now()))
    _audit(store, "user.create", f"user:{args.name}", access=args.access)
    print(f"user {args.name} ({args.access}) can sign in", file=sys.stderr)
    store.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clearance.demo import run_demo

    return run_demo(args.database_url, keep=args.keep)


def cmd_integrator_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from clearance.integrator.rules import RuleError
    from clearance.integrator.service import build, from_files

    if not args.api_key:
        raise ClearanceError("--api-key (or CLEARANCE_INTEGRATOR_API_KEY) is required")
    try:
        config = from_files(
            args.engine_url,
            args.api_key,
            args.rules,
            args.customers,
            secret=args.secret,
            timezone=args.timezone or "UTC",
            public_url=args.public_url,
            register=args.register,
            gateway_budget_ms=args.gateway_budget_ms,
        )
    except (RuleError, OSError, ValueError) as exc:
        raise ClearanceError(str(exc)) from exc
    try:
        app, _, _ = build(config)
    except (RuleError, OSError, ValueError) as exc:
        raise ClearanceError(str(exc)) from exc
    log.info(
        "integrator on http://%s:%s (listener /listener/, gateway /gateway/)", args.host, args.port
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clearance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="API and (by default) the worker in one process")
    _common(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-worker", action="store_true", help="API only")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes on the same port (the scheduler still runs once)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="the scheduler/executor alone")
    _common(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="apply database migrations")
    _common(p)
    p.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create", help="create an API key and print it once")
    _common(p)
    p.add_argument("--type", choices=["admin", "integrations"], required=True)
    p.add_argument("--name", default="")
    p.add_argument(
        "--rate-limit", type=float, help="requests/s for this key (default: the server's setting)"
    )
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="key ids, types and states (never the keys)")
    _common(p)
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key by its id")
    _common(p)
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_revoke)

    users = sub.add_parser("users", help="login users (the console, general/login)")
    usub = users.add_subparsers(dest="users_command", required=True)
    p = usub.add_parser("create", help="create or replace a login user (password: prompt or env)")
    _common(p)
    p.add_argument("name")
    p.add_argument("--access", choices=["admin", "integrations"], default="admin")
    p.set_defaults(func=cmd_users_create)

    integrator = sub.add_parser("integrator", help="the operator's side: listener + gateway")
    isub = integrator.add_subparsers(dest="integrator_command", required=True)
    p = isub.add_parser("serve", help="listener + gateway from a rules file and customer data")
    p.add_argument("--rules", required=True, help="rules TOML file")
    p.add_argument("--customers", required=True, help="customer data CSV (customer_id column)")
    p.add_argument(
        "--engine-url", default=os.environ.get("CLEARANCE_ENGINE_URL", "http://127.0.0.1:8080")
    )
    p.add_argument("--api-key", default=os.environ.get("CLEARANCE_INTEGRATOR_API_KEY"))
    p.add_argument(
        "--secret",
        default=os.environ.get("CLEARANCE_SIGNING_SECRET"),
        help="whsec_ secret: verify notifications and sign as the engine does",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--timezone", help="the engine's site time zone (default UTC)")
    p.add_argument("--gateway-budget-ms", type=int, default=1500)
    p.add_argument("--public-url", help="where the engine reaches this service")
    p.add_argument(
        "--register",
        action="store_true",
        help="register the listener and set the gateway on the engine at start",
    )
    p.set_defaults(func=cmd_integrator_serve)

    p = sub.add_parser("demo", help="a scripted run on SQLite you can watch in under a minute")
    p.add_argument("--database-url", help="default: a fresh SQLite file in a temp directory")
    p.add_argument(
        "--keep",
        action="store_true",
        help="then keep the engine and the kit running and print the console URL and a sign-in",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        configure_logging("text", logging.WARNING)
    else:
        fmt = os.environ.get("CLEARANCE_LOG_FORMAT", Settings.log_format)
        configure_logging("text" if fmt == "text" else "json")
    try:
        return int(args.func(args))
    except ClearanceError as exc:
        print(f"clearance: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
