"""`argo-chatops`: the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from bot.settings import Settings, describe_validation_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="argo-chatops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the service on HOST:PORT")
    demo = commands.add_parser(
        "demo", help="run one /argo run end to end against local stand-ins and print the thread"
    )
    demo.add_argument("--template", default="csv-summary")
    demo.add_argument("--text", default='rows=12 title="Demo numbers"', help="parameters")
    commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    commands.add_parser(
        "check", help="try every configured connection, print one row each; non-zero on failure"
    )
    arguments = parser.parse_args(argv)

    if arguments.command == "demo":
        from bot.demo import run_demo

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return asyncio.run(run_demo(template=arguments.template, parameters=arguments.text))

    try:
        settings = Settings()  # type: ignore[call-arg]  # read from the environment
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2
    from bot.logging_setup import configure_logging

    configure_logging(settings)
    if arguments.command == "migrate":
        return asyncio.run(_migrate(settings))
    if arguments.command == "check":
        from bot.check import check_command

        return asyncio.run(check_command(settings, sys.stdout))

    from bot.app import create_app

    app = create_app(settings)
    app.on_startup.append(_freeze_startup_heap)  # runs once every client is open
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        # A burst of Slack requests must queue, not be refused: aiohttp's default is 128.
        backlog=2048,
        loop=new_event_loop(),
    )
    return 0


async def _freeze_startup_heap(_app: web.Application) -> None:
    """Leave what start-up built (modules, clients, settings) out of every later
    garbage collection: with it, each collection under load scanned the whole heap, about a
    third of the CPU of a burst of acks (BENCHMARKS.md, round 3)."""
    gc.collect()
    gc.freeze()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), else asyncio's.

    It spends less CPU per request and per connection (BENCHMARKS.md, round 3).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _migrate(settings: Settings) -> int:
    from bot.store import Store

    store = Store.from_url(settings.database_url)
    try:
        await store.migrate()
    finally:
        await store.close()
    print("database schema is current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
