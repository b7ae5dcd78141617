"""Floors for the ack benchmark: bare slack-bolt apps on aiohttp that only ack `/argo`.

`python -m benchmarks.floor_app PORT MODE` where MODE is `lazy` (process_before_response=True:
the answer leaves as soon as the listener returns) or `default` (Bolt's default mode, which
polls for the ack about every 10 ms).
"""

from __future__ import annotations

import sys

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.cli import new_event_loop  # the service's own event loop, for a like-for-like floor


def build(signing_secret: str, mode: str) -> web.Application:
    bolt = AsyncApp(
        client=AsyncWebClient(token="xoxb-floor", base_url="http://127.0.0.1:9/api/"),
        signing_secret=signing_secret,
        process_before_response=(mode == "lazy"),
        # The floor has no Slack to ask who it is: skip the lazy auth.test.
        authorize=lambda **_: _authorization(),
    )

    @bolt.command("/argo")
    async def only_ack(ack) -> None:  # type: ignore[no-untyped-def]
        await ack(text="ok", response_type="ephemeral")

    async def endpoint(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", endpoint)
    app.router.add_get("/readyz", lambda request: web.json_response({"status": "ready"}))
    return app


async def _authorization():  # type: ignore[no-untyped-def]
    from slack_bolt.authorization import AuthorizeResult

    return AuthorizeResult(
        enterprise_id=None, team_id="T0001", bot_token="xoxb-floor", bot_user_id="UBOT"
    )


if __name__ == "__main__":
    port, mode, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    web.run_app(
        build(secret, mode),
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        backlog=2048,  # as the service's: a dropped SYN costs its client a 1 s retry
        loop=new_event_loop(),
    )
