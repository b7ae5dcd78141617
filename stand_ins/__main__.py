"""`python -m stand_ins`: the stand-ins in a process of their own, for benchmarks and soaks.

Prints one JSON line with everything a service needs to reach them (and the tokens it must
use), then serves until it is stopped. A small control API lets another process inject
faults and read what the stand-ins saw, so that load generators and the service under test
never share an event loop with them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import signal
import sys

from aiohttp import web

from bot.demo import schema_path, templates_path
from stand_ins.argo_emulator import ArgoEmulator, workflow_completed
from stand_ins.fake_slack import FakeSlack
from stand_ins.s3_server import S3Server

FAKES = web.AppKey("fakes", dict)


def control_app(slack: FakeSlack, argo: ArgoEmulator) -> web.Application:
    """Fault injection and read-outs, for the driver of a benchmark or soak."""
    app = web.Application()
    app[FAKES] = {"slack": slack, "argo": argo}

    async def slack_fail_next(request: web.Request) -> web.Response:
        body = await request.json()
        slack.fail_next(
            body["method"],
            status=int(body.get("status", 500)),
            times=int(body.get("times", 1)),
            retry_after=body.get("retry_after"),
        )
        return web.json_response({"ok": True})

    async def argo_fail_next(request: web.Request) -> web.Response:
        body = await request.json()
        argo.fail_next(
            body["method"], body["path_regex"], int(body["status"]), int(body.get("times", 1))
        )
        return web.json_response({"ok": True})

    async def argo_settings(request: web.Request) -> web.Response:
        body = await request.json()
        for knob in ("latency", "hook_copies", "completion_delay", "auto_run"):
            if knob in body:
                setattr(argo, knob, body[knob])
        return web.json_response({"ok": True})

    async def argo_complete(request: web.Request) -> web.Response:
        """Finish runs without executing them, as a cluster would (hooks included)."""
        body = await request.json()
        names = body.get("names") or [
            name for name, wf in argo.workflows.items() if not workflow_completed(wf)
        ]
        phase = body.get("phase", "Succeeded")
        run_hook = bool(body.get("run_hook", True))
        # Optional output files for every run: {step: {file name: text}}, written to S3.
        artifacts = {
            step: {file: str(text).encode() for file, text in files.items()}
            for step, files in (body.get("artifacts") or {}).items()
        }
        await asyncio.gather(
            *(argo.complete(name, phase, run_hook=run_hook, artifacts=artifacts) for name in names),
            return_exceptions=True,
        )
        return web.json_response({"completed": len(names)})

    async def summary(request: web.Request) -> web.Response:
        posted = [
            call.args
            for call in slack.calls_to("chat.postMessage")
            if call.ok and call.args.get("thread_ts")
        ]
        return web.json_response(
            {
                "workflows": len(argo.workflows),
                "created": len(argo.created),
                "completed": sum(1 for wf in argo.workflows.values() if workflow_completed(wf)),
                "hook_calls": len(argo.hook_calls),
                "thread_replies": [
                    {"thread_ts": args.get("thread_ts"), "text": args.get("text", "")}
                    for args in posted
                ],
                "roots": sum(
                    1
                    for messages in slack.messages.values()
                    for m in messages
                    if not m.thread_ts and not m.deleted
                ),
                # What people were told privately that was not good news (refusals, errors).
                "private_warnings": [
                    text
                    for text in [str(r.body.get("text", "")) for r in slack.responses]
                    + [c.args.get("text", "") for c in slack.calls_to("chat.postEphemeral")]
                    if text.startswith(":warning:")
                ],
                "argo_requests": len(argo.requests),
                "slack_calls": len(slack.calls),
            }
        )

    async def slack_calls(request: web.Request) -> web.Response:
        """Web API calls from index `since` on (optionally one `method`), with their times."""
        since = int(request.query.get("since", 0))
        method = request.query.get("method")
        return web.json_response(
            [
                {
                    "index": index,
                    "method": call.method,
                    "at": call.at,
                    "ok": call.ok,
                    "channel": call.args.get("channel"),
                    "thread_ts": call.args.get("thread_ts"),
                    "text": str(call.args.get("text") or ""),
                }
                for index, call in enumerate(slack.calls[since:], start=since)
                if method is None or call.method == method
            ]
        )

    async def collect_garbage(request: web.Request) -> web.Response:
        """A full garbage collection now, so that none falls into a benchmark's timed window
        (the stand-ins' heap holds every workflow, message and call of the setup)."""
        return web.json_response({"collected": gc.collect()})

    async def reset_counters(request: web.Request) -> web.Response:
        argo.requests.clear()
        return web.json_response({"ok": True})

    app.router.add_post("/slack/fail_next", slack_fail_next)
    app.router.add_post("/argo/fail_next", argo_fail_next)
    app.router.add_post("/argo/settings", argo_settings)
    app.router.add_post("/argo/complete", argo_complete)
    app.router.add_post("/reset", reset_counters)
    app.router.add_post("/collect", collect_garbage)
    app.router.add_get("/summary", summary)
    app.router.add_get("/slack/calls", slack_calls)
    return app


async def serve(arguments: argparse.Namespace) -> None:
    bot_token = "xoxb-standin-" + secrets.token_hex(6)
    argo_token = secrets.token_hex(12)
    s3_server = S3Server(bucket="argo-artifacts")
    s3 = await asyncio.to_thread(s3_server.start)
    slack = FakeSlack(bot_token=bot_token)
    slack.latency = arguments.slack_latency
    argo = ArgoEmulator(
        token=argo_token, schema_path=schema_path(), s3=s3, auto_run=not arguments.no_auto_run
    )
    argo.latency = arguments.argo_latency
    argo.load_templates(templates_path())
    await slack.start()
    await argo.start()
    runner = web.AppRunner(control_app(slack, argo), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control_port = runner.addresses[0][1]
    print(
        json.dumps(
            {
                "SLACK_API_URL": slack.api_url,
                "SLACK_BOT_TOKEN": bot_token,
                "SLACK_FILE_HOSTS": slack.host,
                "ARGO_SERVER_URL": argo.url,
                "ARGO_TOKEN": argo_token,
                "S3_ENDPOINT_URL": s3.endpoint_url,
                "S3_ACCESS_KEY": s3.access_key,
                "S3_SECRET_KEY": s3.secret_key,
                "S3_BUCKET": s3.bucket,
                "S3_REGION": s3.region,
                "control_url": f"http://127.0.0.1:{control_port}",
                "response_url": slack.response_url(),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    await argo.close()
    await slack.close()
    await asyncio.to_thread(s3_server.stop)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stand_ins", description=__doc__)
    parser.add_argument("--argo-latency", type=float, default=0.0)
    parser.add_argument("--slack-latency", type=float, default=0.0)
    parser.add_argument("--no-auto-run", action="store_true", help="never execute workflows")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(arguments))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
