"""The open-loop generator and the latency benchmark's reading of answers: what the recorded figures rest on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import open_loop
from bench.serving_latency import answer_shares, recommendation_label


class _Answers(BaseHTTPRequestHandler):
    """GET /r?u=<user>: 200 with a body naming the user's rung (`u` odd: cached full, else stale)."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        user = self.path.rsplit("=", 1)[1]
        _Answers.seen.append(user)
        odd = int(user) % 2 == 1
        body = json.dumps({"degradation": "full" if odd else "stale_features", "cached": odd}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Answers.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_random_draws_reach_every_target_and_each_answer_is_labelled(server: str) -> None:
    urls = [f"{server}/r?u={u}" for u in range(20)]
    result = open_loop(urls, rate=200, seconds=1, seed=7, classify=recommendation_label)
    assert result["requests"] == 200 and result["errors"] == 0
    assert result["statuses"] == {"200": 200}
    assert len(set(_Answers.seen)) == 20  # 200 draws over 20 users: all drawn, not the first ones cycled
    assert _Answers.seen[:20] != [str(u) for u in range(20)]
    odd = sum(int(u) % 2 for u in _Answers.seen)
    assert result["answers"] == {"full/cached": odd, "stale_features": 200 - odd}
    assert set(result["by_answer"]) == {"full/cached", "stale_features"}


def test_the_same_seed_draws_the_same_users(server: str) -> None:
    urls = [f"{server}/r?u={u}" for u in range(50)]
    open_loop(urls, rate=100, seconds=0.5, seed=3)
    first = sorted(_Answers.seen)
    _Answers.seen = []
    open_loop(urls, rate=100, seconds=0.5, seed=3)
    assert sorted(_Answers.seen) == first


def test_degraded_share_counts_cached_full_answers_as_full() -> None:
    figures = {"requests": 10, "answers": {"full": 4, "full/cached": 2, "stale_features": 2, "popular": 1,
                                           "http 503": 1}}
    shares = answer_shares(figures)
    assert shares["answered"] == 9
    assert shares["degraded_share"] == round(3 / 9, 4)
    assert shares["rungs"] == {"full": round(6 / 9, 4), "popular": round(1 / 9, 4),
                               "stale_features": round(2 / 9, 4)}
    assert shares["cached_share"] == round(2 / 9, 4)
    assert shares["full_of_sent"] == 0.6


def test_an_error_answer_is_labelled_by_its_status() -> None:
    assert recommendation_label(503, b'{"detail": "busy"}') == "http 503"
    assert recommendation_label(200, b"not json") == "unparsed"
