"""Floor for the hook benchmark: a bare aiohttp handler that announces a finished run.

    python -m benchmarks.hook_floor PORT  (settings in the environment, one JSON line on stdin)

Per hook: check the bearer token (the same HMAC the service checks), answer 202, then in a
task presign the run's artifact keys (with the service's own local signer) and make one
`chat.postMessage` to the fake Slack with a plain aiohttp POST. No database, no Argo read, no
S3 request, no thread: the least work that still puts a result with working links in Slack.
The artifact keys are the ones the benchmark wrote (`sessions/<name>/<step>/<file>`), known
here by convention.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from bot.cli import new_event_loop  # the service's own event loop, for a like-for-like floor
from bot.storage import S3Storage
from workflows.manifest import hook_token_matches

HTTP = web.AppKey("http", aiohttp.ClientSession)
S3 = web.AppKey("s3", object)
TASKS = web.AppKey("tasks", set)


def build(config: dict[str, Any]) -> web.Application:
    secret = config["webhook_secret"]
    keys: list[str] = config["artifact_keys"]  # with "{name}" in place of the workflow name
    slack_url = config["SLACK_API_URL"].rstrip("/") + "/chat.postMessage"
    slack_auth = {"Authorization": f"Bearer {config['SLACK_BOT_TOKEN']}"}

    async def clients(app: web.Application) -> AsyncIterator[None]:
        # The service's own presign (botocore's SigV4 query signer, local): the same signing
        # work per link as the service, so the floor differs only in what it leaves out.
        storage = S3Storage(
            bucket=config["S3_BUCKET"],
            endpoint_url=config["S3_ENDPOINT_URL"],
            access_key=config["S3_ACCESS_KEY"],
            secret_key=config["S3_SECRET_KEY"],
            region=config["S3_REGION"],
        )
        await storage.open()
        async with aiohttp.ClientSession() as http:
            app[HTTP], app[S3], app[TASKS] = http, storage, set()
            yield
            await asyncio.gather(*app[TASKS], return_exceptions=True)
        await storage.close()

    async def announce(app: web.Application, name: str, channel: str) -> None:
        storage: Any = app[S3]
        links = [storage.presigned_get_url(key.format(name=name), 3600) for key in keys]
        text = f"{name} succeeded: " + " ".join(f"<{url}|{i}>" for i, url in enumerate(links))
        body = {"channel": channel, "text": text, "unfurl_links": False}
        async with app[HTTP].post(slack_url, json=body, headers=slack_auth) as response:
            await response.read()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        name, namespace = str(body.get("name", "")), str(body.get("namespace", ""))
        token = request.headers.get("Authorization", "").partition(" ")[2]
        if not hook_token_matches(secret, namespace, name, token):
            return web.json_response({"status": 401}, status=401)
        task = asyncio.get_running_loop().create_task(
            announce(request.app, name, config["channel"])
        )
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
        return web.json_response({"status": 202, "message": "accepted"}, status=202)

    app = web.Application()
    app.cleanup_ctx.append(clients)
    app.router.add_post("/hooks/argo", hook)
    app.router.add_get("/readyz", lambda request: web.json_response({"status": "ready"}))
    return app


if __name__ == "__main__":
    settings = json.loads(sys.stdin.readline())
    os.environ.pop("AWS_PROFILE", None)
    port = int(sys.argv[1])
    web.run_app(
        build(settings),
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        backlog=2048,  # as the service's
        loop=new_event_loop(),
    )
