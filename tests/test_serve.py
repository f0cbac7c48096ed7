"""`prefsmith serve`: the reward server's answers, batching, limits, auth, errors and drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest
from typer.testing import CliRunner

from prefsmith.cli.main import app as cli_app
from prefsmith.integrations.server import ServeConfig, create_app
from prefsmith.models.backend import ScoreRequest
from prefsmith.rewards.base import Reward
from prefsmith.rewards.spec import parse_scorer
from prefsmith.testing import tiny_model

CHATML = "<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Name a colour.", "responses": ["Blue.", "Red, I think.", "Green"]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi."},
        ],
        "responses": [[{"role": "assistant", "content": "Hi!"}]],
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scorer() -> str:
    return f"density-ratio:{tiny_model(seed=0)},{tiny_model(seed=1)}:sum"


def config_of(scorer: str, **overrides) -> ServeConfig:
    return ServeConfig(scorer=scorer, port=free_port(), **overrides)


@contextlib.contextmanager
def running(config: ServeConfig, reward: Reward | None = None) -> Iterator[str]:
    """A real uvicorn server on loopback, in a thread, for the duration of the block."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, reward), host="127.0.0.1", port=config.port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def offline(scorer: str, rows: Sequence[dict]) -> list[dict]:
    """What `prefsmith score` (the Python API of the same step) gives the rows."""
    return parse_scorer(scorer).score(list(rows))


def metric(text: str, name: str) -> float:
    """One unlabelled sample of a Prometheus text page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_score_and_get_reward_equal_offline_scoring(scorer) -> None:
    expected = offline(scorer, ROWS)
    with running(config_of(scorer)) as url:
        got = httpx.post(f"{url}/score", json={"rows": ROWS}, timeout=60).json()
        health = httpx.get(f"{url}/health").json()
        queries = [CHATML.format(p="2+2?") + "4<|im_end|>\n", "Q: 2+2?\nA: 5</s>"]
        rewards = httpx.post(
            f"{url}/get_reward",
            json={"query": queries, "prompts": [CHATML.format(p="2+2?"), "Q: 2+2?\nA:"]},
            timeout=60,
        ).json()
        unsplit = httpx.post(f"{url}/get_reward", json={"query": queries[:1]}, timeout=60).json()
    assert got["scorer"] == scorer == health["scorer"] == rewards["scorer"]
    assert got["settings_hash"] == health["settings_hash"] and len(got["settings_hash"]) == 12
    pair, candidates, chat = got["results"]
    assert [pair["reward_chosen"], pair["reward_rejected"], pair["reward_margin"]] == [
        expected[0]["reward_chosen"],
        expected[0]["reward_rejected"],
        expected[0]["reward_margin"],
    ]
    assert candidates["rewards"] == expected[1]["rewards"]
    assert chat["rewards"] == expected[2]["rewards"]
    # A ChatML query is read back into its user turn; a plain one is one user turn.
    as_rows = offline(
        scorer,
        [{"prompt": "2+2?", "responses": ["4"]}, {"prompt": "Q: 2+2?\nA:", "responses": ["5"]}],
    )
    assert rewards["rewards"] == [as_rows[0]["rewards"][0], as_rows[1]["rewards"][0]]
    assert unsplit["rewards"] == rewards["rewards"][:1] == [expected[0]["reward_chosen"]]


async def _concurrently(
    url: str, bodies: list[dict], route: str = "/score"
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return list(await asyncio.gather(*(client.post(url + route, json=b) for b in bodies)))


def test_concurrent_requests_share_batches_and_get_their_own_answers(scorer) -> None:
    rows = [{"prompt": f"Question {i}?", "responses": [f"Answer {i}."]} for i in range(8)]
    expected = [r["rewards"] for r in offline(scorer, rows)]
    for budget, shared in ((16384, True), (0, False)):
        config = config_of(scorer, max_wait_ms=300, max_batch_tokens=budget)
        with running(config) as url:
            responses = asyncio.run(_concurrently(url, [{"rows": [r]} for r in rows]))
            text = httpx.get(f"{url}/metrics").text
        assert [r.json()["results"][0]["rewards"] for r in responses] == expected
        batches = metric(text, "prefsmith_batches_total")
        if shared:
            assert batches < len(rows)
            assert metric(text, "prefsmith_batch_requests_sum") == len(rows)
        else:
            assert batches == len(rows)


def test_bad_requests_are_answered_and_named(scorer) -> None:
    config = config_of(scorer, max_body_bytes=2000, max_items=4, max_item_tokens=40)
    cases = [
        ("/score", b"{not json", 400, "malformed JSON"),
        ("/score", b"[1, 2]", 422, "JSON object"),
        ("/score", b"{}", 422, "'rows'"),
        ("/score", json.dumps({"rows": [{"prompt": "hi"}]}).encode(), 422, "rows[0]: missing"),
        ("/score", json.dumps({"rows": "x"}).encode(), 422, "'rows'"),
        ("/get_reward", b'{"prompts": []}', 422, "'query'"),
        ("/get_reward", b'{"query": [1]}', 422, "'query' must be a list of str"),
        ("/get_reward", b'{"query": ["a"], "prompts": ["a", "b"]}', 422, "'prompts'"),
        ("/get_reward", b'{"query": ["no header"]}', 422, "query[0]: no assistant header"),
        ("/get_reward", b'{"query": ["x' + b"y" * 3000 + b'"]}', 413, "max_body_bytes=2000"),
        ("/get_reward", json.dumps({"query": ["Q"] * 5}).encode(), 413, "max_items=4"),
        (
            "/score",
            json.dumps(
                {"rows": [{"prompt": "hi", "responses": ["a", "b", "c", "d", "e"]}]}
            ).encode(),
            413,
            "max_items=4",
        ),
        (
            "/score",
            json.dumps({"rows": [{"prompt": "hi", "responses": ["word " * 60]}]}).encode(),
            422,
            "max_item_tokens=40",
        ),
    ]
    with running(config) as url:
        for route, body, status, words in cases:
            response = httpx.post(url + route, content=body, timeout=60)
            assert response.status_code == status, (route, body[:40], response.text)
            assert words in response.json()["error"], (words, response.json())
        good = httpx.post(f"{url}/score", json={"rows": ROWS[:1]}, timeout=60)
        text = httpx.get(f"{url}/metrics").text
    assert good.status_code == 200
    assert f'prefsmith_errors_total{{kind="client"}} {len(cases)}' in text
    assert 'prefsmith_requests_total{route="/score",status="422"}' in text


def test_api_key_guards_every_route_but_health(scorer, monkeypatch) -> None:
    monkeypatch.setenv("PREFSMITH_API_KEY", "s3cret")
    with running(config_of(scorer)) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        for route in ("/score", "/get_reward"):
            denied = httpx.post(url + route, json={"rows": ROWS[:1]})
            assert denied.status_code == 401 and "Bearer" in denied.json()["error"]
            wrong = httpx.post(url + route, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        ok = httpx.post(
            f"{url}/score", json={"rows": ROWS[:1]}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200 and ok.json()["results"][0]["reward_margin"] == pytest.approx(
            offline(scorer, ROWS[:1])[0]["reward_margin"], abs=0
        )


class FailsOnBoom(Reward):
    """A real density ratio whose engine fails on any batch holding the response ``boom``
    (an out-of-memory error stands in for it): the server's handling of engine errors."""

    def __init__(self, inner: Reward) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def passes(self) -> int:
        return self.inner.passes

    def settings(self) -> dict:
        return self.inner.settings()

    def tokenizers(self):
        return self.inner.tokenizers()

    def score_requests(self, requests: Sequence[ScoreRequest], on_progress=None):
        if any(r.response == "boom" for r in requests):
            raise RuntimeError("out of memory while scoring")
        return self.inner.score_requests(requests, on_progress)


def test_an_engine_error_fails_only_its_batch(scorer) -> None:
    reward = FailsOnBoom(parse_scorer(scorer))
    good = {"rows": [{"prompt": "hi", "responses": ["hello"]}]}
    bad = {"rows": [{"prompt": "hi", "responses": ["boom"]}]}
    expected: list[float] = offline(scorer, good["rows"])[0]["rewards"]
    with running(config_of(scorer, max_wait_ms=300), reward) as url:
        together = asyncio.run(_concurrently(url, [good, bad, good]))
        assert [r.status_code for r in together] == [500, 500, 500]
        assert "scoring failed: RuntimeError: out of memory" in together[1].json()["error"]
        after = httpx.post(f"{url}/score", json=good, timeout=60)
        assert after.status_code == 200 and after.json()["results"][0]["rewards"] == expected
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    with running(config_of(scorer, max_batch_tokens=0), reward) as url:
        alone = asyncio.run(_concurrently(url, [good, bad, good]))
        assert [r.status_code for r in alone] == [200, 500, 200]
        assert alone[2].json()["results"][0]["rewards"] == expected
        text = httpx.get(f"{url}/metrics").text
    assert 'prefsmith_errors_total{kind="engine"} 1' in text


def test_metrics_are_prometheus_text(scorer) -> None:
    with running(config_of(scorer)) as url:
        httpx.post(f"{url}/score", json={"rows": ROWS}, timeout=60)
        response = httpx.get(f"{url}/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metric(text, "prefsmith_items_total") == 6
    assert metric(text, "prefsmith_tokens_total") > 6
    assert 'prefsmith_requests_total{route="/score",status="200"} 1' in text
    assert 'prefsmith_request_latency_seconds_count{route="/score"} 1' in text
    assert "# TYPE prefsmith_batch_items histogram" in text
    assert 'prefsmith_batch_items_bucket{le="+Inf"} 1' in text


def test_sigterm_drains_requests_in_flight(scorer, tmp_path) -> None:
    """A request still waiting for its batch when SIGTERM comes is answered, then it exits."""
    port = free_port()
    strong, weak = tiny_model(seed=0), tiny_model(seed=1)
    command = [sys.executable, "-m", "prefsmith.cli.main", "serve", "--strong", strong]
    command += ["--weak", weak, "--port", str(port), "--max-wait-ms", "2000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        answers: list[httpx.Response] = []
        body = {"rows": [{"prompt": "hi", "responses": ["hello"]}]}
        client = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/score", json=body, timeout=60))
        )
        client.start()
        time.sleep(0.7)  # the request now waits in the batcher (2 s)
        server.send_signal(signal.SIGTERM)
        client.join(60)
        # uvicorn exits by the signal it drained for (status -15), as its docs say.
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    assert answers and answers[0].status_code == 200
    assert "Finished server process" in (tmp_path / "server.log").read_text()
    assert (
        answers[0].json()["results"][0]["rewards"]
        == offline(f"density-ratio:{strong},{weak}:sum", body["rows"])[0]["rewards"]
    )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_serve_command_refuses_a_bad_scorer_before_loading() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--scorer", "ratio"])
    assert result.exit_code == 2 and "unknown scorer 'ratio'" in result.output
    result = CliRunner().invoke(cli_app, ["serve", "--max-items", "0"])
    assert result.exit_code == 2 and "max_items must be at least 1" in result.output
