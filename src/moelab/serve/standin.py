"""A stand-in OpenAI-compatible completions server for tests: fixed, known timings and chosen failure modes.

`python -m moelab.serve.standin --port P [--host H] [--delay-ms D] [--token-ms T] [--mode MODE]` serves
GET /health, GET /v1/models and POST /v1/completions the way vLLM's OpenAI server does
(vllm/entrypoints/openai/api_server.py): a streamed completion is Server-Sent Events, one `data: {json}` chunk
per token (or per K tokens with --tokens-per-chunk K), the first D ms after the request and each next one T ms
later, then, when the request asked for `stream_options.include_usage`, a chunk with empty `choices` and
`usage`, then `data: [DONE]`.
usage.prompt_tokens echoes the prompt's length (a token-id list's length, or a text's whitespace words).

Unknown arguments are ignored, so this can stand in for `python -m vllm.entrypoints.openai.api_server --model X
--port P ...`; of vLLM's flags it reads --host, --port, --model, --served-model-name (a request naming another
model gets 404, as in vLLM) and --api-key (then requests need `Authorization: Bearer KEY`, else 401).

Modes: ok; refuse (401 JSON error); nonjson (200 text/html); hang (accepts, never answers); die-at-start
(one error line on stderr, exit 1); and for the load generator's error paths: flaky (every second completion
answers 500), break-stream (two chunks, then the connection drops mid-stream), bad-chunk (a non-JSON data
line after the first chunk), no-usage (never sends a usage chunk). Standard library only; SIGTERM exits at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "refuse", "nonjson", "hang", "die-at-start", "flaky", "break-stream", "bad-chunk", "no-usage")
DEFAULT_MODEL = "standin"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never holds the process at exit
    allow_reuse_address = True

    def __init__(self, address, opts: argparse.Namespace):
        super().__init__(address, _Handler)
        self.opts = opts
        self.completions = 0
        self.lock = threading.Lock()
        self.served_model = opts.served_model_name or opts.model


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as uvicorn serves vLLM
    # TCP_NODELAY, as asyncio's transports (uvicorn, so vLLM) set it: with Nagle's algorithm each small chunk on a
    # kept-alive connection waited for the client's delayed ACK, so tokens came in bunches ~40 ms late
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass  # quiet: the tests read stderr only for real errors

    # ---- helpers
    def _send_json(self, status: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

    def _hang(self) -> None:
        while True:  # accepted, never answered; the daemon thread dies with the process
            time.sleep(3600)

    def _common(self) -> bool:
        """Apply the failure modes that hold for every path; True when the request was answered."""
        mode = self.server.opts.mode
        if mode == "hang":
            self._hang()
        if mode == "refuse":
            self._send_json(401, {"error": "Unauthorized"})
            return True
        if mode == "nonjson":
            body = b"<html><body><h1>It works!</h1></body></html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        key = self.server.opts.api_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            self._send_json(401, {"error": "Unauthorized"})
            return True
        return False

    # ---- routes
    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path == "/health":
            if self.server.opts.mode == "hang":
                self._hang()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self._common():
            return
        if self.path == "/v1/models":
            model = self.server.served_model or DEFAULT_MODEL
            self._send_json(200, {"object": "list", "data": [{"id": model, "object": "model", "root": model}]})
            return
        self._error(404, f"no route {self.path}")

    def do_POST(self):  # noqa: N802 - the stdlib's name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self._common():
            return
        if self.path != "/v1/completions":
            self._error(404, f"no route {self.path}")
            return
        try:
            req = json.loads(raw)
        except ValueError:
            self._error(400, "body is not JSON")
            return
        if not isinstance(req, dict):
            self._error(400, "body is not a JSON object")
            return
        served = self.server.served_model
        if served is not None and req.get("model") != served:
            self._error(404, f"The model `{req.get('model')}` does not exist.")
            return
        prompt = req.get("prompt")
        if isinstance(prompt, str):
            prompt_tokens = len(prompt.split())
        elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            prompt_tokens = len(prompt)
        else:
            self._error(400, "prompt must be a string or a list of token ids")
            return
        max_tokens = req.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            self._error(400, "max_tokens must be a positive integer")
            return
        with self.server.lock:
            self.server.completions += 1
            nth = self.server.completions
        if self.server.opts.mode == "flaky" and nth % 2 == 0:
            self._error(500, "simulated server error")
            return
        model = req.get("model") or DEFAULT_MODEL
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                 "total_tokens": prompt_tokens + max_tokens}
        if req.get("stream"):
            options = req.get("stream_options") or {}
            self._stream(model, max_tokens, usage if options.get("include_usage") else None)
        else:
            time.sleep(self.server.opts.delay_ms / 1000 + (max_tokens - 1) * self.server.opts.token_ms / 1000)
            self._send_json(200, {
                "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": " tok" * max_tokens, "logprobs": None, "finish_reason": "length"}],
                "usage": usage,
            })

    def _stream(self, model: str, max_tokens: int, usage: dict | None) -> None:
        opts = self.server.opts
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def event(payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def chunk(choices: list, extra: dict | None = None) -> str:
            obj = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": choices}
            obj.update(extra or {})
            return json.dumps(obj)

        per = opts.tokens_per_chunk
        n_chunks = -(-max_tokens // per)
        time.sleep(opts.delay_ms / 1000)
        for i in range(n_chunks):
            if i:
                time.sleep(opts.token_ms / 1000)
            last = i == n_chunks - 1
            text = " tok" * (max_tokens - i * per if last else per)
            event(chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": "length" if last else None}]))
            if opts.mode == "bad-chunk" and i == 0:
                event("<not json>")
            if opts.mode == "break-stream" and i == 1:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the client sees an incomplete body
                return
        if usage is not None and opts.mode != "no-usage":
            event(chunk([], {"usage": usage}))
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m moelab.serve.standin", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--delay-ms", type=float, default=20.0, help="time to the first token")
    p.add_argument("--token-ms", type=float, default=5.0, help="time between tokens")
    p.add_argument("--tokens-per-chunk", type=int, default=1,
                   help="tokens per streamed chunk (a server may bundle several; usage still counts them all)")
    p.add_argument("--mode", choices=MODES, default="ok")
    p.add_argument("--model", default=None, help="served model id (vLLM's flag); any id is accepted when unset")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--api-key", default=None)
    opts, _unknown = p.parse_known_args(argv)  # a vLLM command line carries many flags this ignores
    if opts.delay_ms < 0 or opts.token_ms < 0:
        p.error("--delay-ms and --token-ms must be >= 0")
    if opts.tokens_per_chunk < 1:
        p.error("--tokens-per-chunk must be >= 1")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    if opts.mode == "die-at-start":
        print("standin: error: simulated start-up failure (--mode die-at-start)", file=sys.stderr, flush=True)
        return 1
    try:
        server = _Server((opts.host, opts.port), opts)
    except OSError as exc:
        print(f"standin: error: cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    # SIGTERM ends the process at once, whatever the handler threads are doing (hang mode sleeps forever)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"standin: serving on http://{opts.host}:{server.server_address[1]} (mode {opts.mode})",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
