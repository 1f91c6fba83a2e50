"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, shared by the synthetic and refresh tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """A real OpenAI-style HTTP server on 127.0.0.1 whose answers a test scripts with `respond(body, n)`.

    `respond` gets the parsed request body and the 1-based count of requests so far, and returns
    (status, json_body, delay_seconds). Used to test the openai engine's retries, timeouts and concurrency.
    """

    def __init__(self, respond: Callable[[dict, int], tuple[int, dict, float]]):
        self.respond = respond
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.count += 1
                    n = server.count
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, delay = server.respond(body, n)
                    if delay:
                        threading.Event().wait(delay)
                    data = json.dumps(payload).encode()
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion_body(content: str, tokens: int = 10, finish_reason: str = "stop") -> dict:
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": {"completion_tokens": tokens},
    }


# Two kind dialogues: `two_dialogues` answers each request with one of them by its seed, so any third dialogue
# of a run is a near-duplicate of an earlier one.
KIND = [
    (
        "My neighbour is struggling after her husband died and I do not know how to help her.",
        "Thank you for caring about her. You could ask what would help, and offer specific support like a meal.",
    ),
    (
        "I brought soup and she cried. Was that wrong of me?",
        "Not at all, tears can mean she felt cared for. I hope you both feel a little less alone; please be gentle with yourself.",
    ),
]
OTHER = [
    (
        "Our team keeps missing deadlines and my manager blames me in meetings.",
        "That sounds stressful. Perhaps you could ask for a short meeting to understand what she expects, and share your view.",
    ),
    (
        "I am worried she will get angry if I bring it up.",
        "That is understandable. You know her best, so consider whether email or a talk feels safer, and it is your choice.",
    ),
]


def two_dialogues(body: dict, n: int) -> tuple[int, dict, float]:
    """A `respond` for ChatServer: KIND for even request seeds, OTHER for odd ones, in the `exchanges` format."""
    pairs = KIND if body["seed"] % 2 == 0 else OTHER
    return (
        200,
        completion_body(json.dumps({"exchanges": [{"user": u, "assistant": a} for u, a in pairs]}), 80),
        0,
    )
