"""`GET /metrics`: scraped after real runs, the counters move where the work happened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from tests.conftest import Bot
from tests.slack_deliveries import BOT_USER, share
from tests.test_run_command import run_to_completion

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Metrics do not depend on the backend: SQLite only here."""
    return f"sqlite:///{tmp_path / 'state.db'}"


async def scrape(bot: Bot) -> Samples:
    async with bot.http.get(f"{bot.url}metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_run_moves_the_command_run_hook_and_client_metrics(bot: Bot) -> None:
    before = await scrape(bot)
    assert value(before, "argo_chatops_commands_total", verb="run", outcome="ok") == 0
    assert "process_cpu_seconds_total" in {name for name, _ in before}

    name, _ = await run_to_completion(bot, "run csv-summary rows=3")
    after = await scrape(bot)

    assert value(after, "argo_chatops_commands_total", verb="run", outcome="ok") == 1
    assert value(after, "argo_chatops_runs_started_total", template="csv-summary") == 1
    assert (
        value(after, "argo_chatops_runs_finished_total", template="csv-summary", phase="Succeeded")
        == 1
    )
    assert value(after, "argo_chatops_hook_to_announcement_seconds_count") == 1
    assert value(after, "argo_chatops_hook_to_announcement_seconds_sum") > 0

    def calls(service: str, operation: str) -> float:
        return value(
            after, "argo_chatops_client_request_seconds_count", service=service, operation=operation
        )

    # Root and result posted, root edited; one create; the template read; the workflow read
    # (hooks in a batch: one list call); the run's artifacts listed (one listing, no HEAD).
    assert calls("slack", "chat.postMessage") == len(bot.slack.calls_to("chat.postMessage")) >= 2
    assert calls("slack", "chat.update") == len(bot.slack.calls_to("chat.update")) >= 1
    assert calls("slack", "response_url") >= 1  # the private "Started" answer
    assert calls("argo", "POST workflows") == 1
    assert calls("argo", "GET workflow-templates/{name}") == 1
    assert calls("argo", "GET workflows") >= 1
    # Artifact links come from Argo's record and are signed locally: no S3 request at all.
    assert [labels for name, labels in after if ("service", "s3") in labels] == []
    assert not [key for key in after if key[0] == "argo_chatops_client_errors_total"]
    assert name.startswith("csv-summary-")


async def test_refusals_and_failed_calls_are_counted_by_kind(bot: Bot) -> None:
    # Argo first: once read, the template is cached and Argo is not asked again.
    bot.argo.fail_next("GET", r"/workflow-templates/argo/csv-summary$", 503, times=3)
    assert (await bot.command("run csv-summary rows=3")).status == 200
    await bot.wait_idle()
    bot.slack.error_next("chat.postMessage", "channel_not_found")
    assert (await bot.command("run csv-summary rows=3")).status == 200
    await bot.wait_idle()
    await bot.command("frobnicate")
    await bot.command('run csv-summary title="unclosed')

    samples = await scrape(bot)
    assert value(samples, "argo_chatops_commands_total", verb="run", outcome="rejected") == 2
    assert value(samples, "argo_chatops_commands_total", verb="unknown", outcome="invalid") == 1
    assert value(samples, "argo_chatops_commands_total", verb="run", outcome="invalid") == 1
    assert (
        value(
            samples,
            "argo_chatops_client_errors_total",
            service="slack",
            operation="chat.postMessage",
            error="channel_not_found",
        )
        == 1
    )
    assert (
        value(
            samples,
            "argo_chatops_client_errors_total",
            service="argo",
            operation="GET workflow-templates/{name}",
            error="http_503",
        )
        == 3
    )
    assert value(samples, "argo_chatops_runs_started_total", template="csv-summary") == 0


async def test_poll_cycles_report_duration_tracked_runs_and_runs_they_rescued(bot: Bot) -> None:
    bot.argo.hook_copies = 0  # the exit hook is lost: only the poller can announce
    bot.argo.completion_delay = 1.0
    assert (await bot.command("run csv-summary rows=3")).status == 200
    await bot.started_runs(1)
    # (The scheduler's own first cycle may run too: counts are compared, not fixed.)
    cycles = value(await scrape(bot), "argo_chatops_poll_cycle_seconds_count", outcome="ok")
    await bot.services.poller.cycle()  # the workflow is still running
    samples = await scrape(bot)
    assert value(samples, "argo_chatops_runs_tracked") == 1
    assert value(samples, "argo_chatops_poll_cycle_seconds_count", outcome="ok") > cycles
    assert value(samples, "argo_chatops_poll_cycle_seconds_sum", outcome="ok") > 0

    await bot.wait_idle()
    await bot.services.poller.cycle()
    samples = await scrape(bot)
    assert value(samples, "argo_chatops_poll_announced_runs_total") == 1
    assert value(samples, "argo_chatops_runs_tracked") == 0
    assert value(samples, "argo_chatops_hook_to_announcement_seconds_count") == 0

    bot.argo.fail_next("GET", r"/workflows/argo$", 500, times=3)
    assert (await bot.command("run csv-summary rows=3")).status == 200
    await bot.started_runs(2)
    await bot.services.poller.cycle()
    samples = await scrape(bot)
    assert value(samples, "argo_chatops_poll_cycle_seconds_count", outcome="failed") == 1


async def test_each_app_has_its_own_registry_and_an_upload_counter(bot_factory) -> None:  # type: ignore[no-untyped-def]
    first, second = await bot_factory(), await bot_factory()
    first.services.metrics.upload_bytes.inc(1234)
    await first.command("help")
    one, two = await scrape(first), await scrape(second)
    assert value(one, "argo_chatops_upload_bytes_total") == 1234
    assert value(two, "argo_chatops_upload_bytes_total") == 0
    assert value(one, "argo_chatops_commands_total", verb="help", outcome="ok") == 1
    assert value(two, "argo_chatops_commands_total", verb="help", outcome="ok") == 0
    assert prometheus_client.REGISTRY.get_sample_value("argo_chatops_upload_bytes_total") is None


async def test_a_file_run_moves_the_s3_client_metrics(bot: Bot) -> None:
    before = await scrape(bot)
    file = bot.slack.add_file("sales.csv", b"region,amount\nnorth,3\nsouth,4\n")
    await share(bot, f"<@{BOT_USER}> run summarize-csv", [file])
    await bot.started_runs(1)
    await bot.wait_idle()
    after = await scrape(bot)

    name = "argo_chatops_client_request_seconds_count"
    uploads = sum(
        value(after, name, service="s3", operation=operation)
        - value(before, name, service="s3", operation=operation)
        for operation in ("PutObject", "CreateMultipartUpload", "UploadPart")
    )
    assert uploads >= 1


async def test_transport_failures_are_timed_and_counted_by_kind(unused_tcp_port: int) -> None:
    """The session middleware: a refused connection and a timeout, each as its own kind."""
    metrics = Metrics()
    slow = web.Application()

    async def stall(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    slow.router.add_get("/api/v1/workflows/argo", stall)
    server = TestServer(slow)
    await server.start_server()
    closed = f"http://127.0.0.1:{unused_tcp_port}/api/"
    middleware = metrics.http_middleware(
        slack_api_url=closed, argo_url=str(server.make_url("")).rstrip("/")
    )
    try:
        async with aiohttp.ClientSession(middlewares=[middleware]) as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.post(closed + "chat.postMessage", json={})
            with pytest.raises(TimeoutError):
                await session.get(
                    server.make_url("/api/v1/workflows/argo"),
                    timeout=aiohttp.ClientTimeout(total=0.2),
                )
    finally:
        await server.close()

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"argo_chatops_client_{name}", labels)

    post = {"service": "slack", "operation": "chat.postMessage"}
    listing = {"service": "argo", "operation": "GET workflows"}
    assert sample("errors_total", **post, error="connection") == 1
    assert sample("errors_total", **listing, error="timeout") == 1
    assert sample("request_seconds_count", **post) == 1
    assert sample("request_seconds_count", **listing) == 1
    assert 0.15 < (sample("request_seconds_sum", **listing) or 0) < 2
