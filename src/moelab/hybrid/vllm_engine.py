"""A run answered by vLLM: exported (moelab.serve.export), served on 127.0.0.1 (moelab.serve.server), asked one
completion at a time at temperature 0 with the log-probability of each generated token.

The prompt goes as the run's own token ids (no re-tokenisation by the server), the answer stops at the stop
string or <|endoftext|> (vLLM's EOS from the exported config) and comes back with `logprobs=1` (the greedy
token's natural log-probability per step, vLLM's completions `token_logprobs`) and `return_token_ids` (vLLM's
extension). The seconds of a query are the client's wall time of its one non-streaming request (sent, answered,
parsed): prefill + decode + the HTTP round trip on 127.0.0.1. The server's start is bounded by
`start_timeout_s`; leaving the context (an error, Ctrl-C) stops its whole process group. Everything vLLM writes
(the export, its log, its caches) lies under the folder given.
"""

from __future__ import annotations

import time
from pathlib import Path

from moelab.errors import MoelabError
from moelab.serve import load

START_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 120.0


class VllmEngine:
    kind = "vllm"

    def __init__(self, source, name: str, folder: Path, max_new_tokens: int, stop: str = "\n",
                 start_timeout_s: float = START_TIMEOUT_S, say=lambda _msg: None) -> None:
        from tokenizers import Tokenizer

        self.source, self.name, self.folder = source, name, Path(folder)
        self.max_new_tokens, self.stop, self.say = max_new_tokens, stop, say
        self.start_timeout_s = start_timeout_s
        self.tokenizer = Tokenizer.from_str(source.tokenizer_json())
        self.server = None
        self.endpoint: load.Endpoint | None = None
        self.environment: dict = {}
        self.ready_after_s: float | None = None

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, add_special_tokens=False).ids

    def __enter__(self) -> VllmEngine:
        from moelab.serve.bench import vllm_command
        from moelab.serve.environment import find_serving_environment, server_env
        from moelab.serve.export import export
        from moelab.serve.server import ServerExited, ServerProcess, free_port

        env_info = find_serving_environment()
        dtype = "bf16" if env_info.device == "cuda" else "fp32"  # as serve-bench: fp32 on vLLM's CPU build
        self.say(f"exporting {self.source.run_folder} for vLLM")
        exported = export(self.source.run_folder, self.folder / "exported" / self.name)
        spec = self.source.spec
        max_len = spec.max_position or 2048
        command = vllm_command(env_info.python, exported.folder, self.name, dtype, 1, max_len)
        log_path = self.folder / "logs" / f"{self.name}-server.log"
        for attempt in (1, 2):
            port = free_port()
            self.say(f"starting vLLM {env_info.vllm_version} ({env_info.device}) for {self.name} on 127.0.0.1:{port}")
            server = ServerProcess(command, port, log_path, env=server_env(self.folder), name=f"vLLM serving "
                                   f"{self.name}", start_timeout_s=self.start_timeout_s)
            try:
                server.__enter__()
            except ServerExited as e:
                if e.port_in_use and attempt == 1:
                    continue
                raise MoelabError(f"{self.source.run_folder}: {e}") from None
            break
        self.server, self.ready_after_s = server, server.ready_after_s
        self.environment = {**env_info.to_dict(), "dtype": dtype, "log": str(log_path),
                            "ready_after_s": server.ready_after_s}
        self.say(f"vLLM ready after {server.ready_after_s:.0f} s")
        self.endpoint = load.Endpoint(name=self.name, base_url=server.base_url, model_id=self.name)
        try:
            load.probe_sync(self.endpoint, REQUEST_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def answer(self, prompt: str):
        """The server's greedy answer to `prompt` as a moelab.eval.generate.Generation."""
        from moelab.eval.generate import Generation

        if self.endpoint is None:
            raise MoelabError("vLLM engine: not started (use it as a context manager)")
        ids = self.encode(prompt)
        body = load.completion_request(self.name, ids, self.max_new_tokens, stream=False)
        body.update(ignore_eos=False, stop=[self.stop], logprobs=1, return_token_ids=True)
        t0 = time.perf_counter()
        try:
            reply = load.post_sync(self.endpoint, body, REQUEST_TIMEOUT_S)
        except MoelabError:
            if self.server is not None and not self.server.alive():  # the engine died: its log says why
                from moelab.serve.server import log_tail, reason

                log = self.server.log_path
                raise MoelabError(f"vLLM serving {self.name} exited: {reason(log_tail(log))} (log: {log})") from None
            raise
        seconds = time.perf_counter() - t0
        try:
            choice = reply["choices"][0]
            text = choice["text"]
            logprobs = [float(x) for x in (choice.get("logprobs") or {}).get("token_logprobs") or []
                        if x is not None]
            token_ids = [int(t) for t in choice.get("token_ids") or []]
        except (KeyError, IndexError, TypeError, ValueError):
            raise MoelabError(f"vLLM serving {self.name}: a completion without text, logprobs or token_ids") from None
        if len(logprobs) != len(token_ids):
            raise MoelabError(f"vLLM serving {self.name}: {len(logprobs)} log-probabilities for {len(token_ids)} "
                              "generated tokens")
        token_ids, logprobs = self._kept(token_ids, logprobs)
        text = text.split(self.stop)[0].strip() if self.stop else text.strip()
        return Generation(text=text, token_ids=token_ids, logprobs=logprobs, seconds=seconds)

    def _kept(self, token_ids: list[int], logprobs: list[float]) -> tuple[list[int], list[float]]:
        """The tokens greedy_answer would keep: all but a last one that is <|endoftext|> or adds only the stop (vLLM
        returns the token that stopped it), so that confidence and token counts mean the same on both engines."""
        from moelab.data.tokenizer import EOT

        if not token_ids:
            return token_ids, logprobs
        head, last = token_ids[:-1], token_ids[-1]
        if last == self.tokenizer.token_to_id(EOT):
            return head, logprobs[:-1]
        full = self.tokenizer.decode(token_ids)
        if self.stop and self.stop in full:
            before = self.tokenizer.decode(head)
            if full.split(self.stop, 1)[0].strip() == before.split(self.stop, 1)[0].strip():
                return head, logprobs[:-1]
        return token_ids, logprobs

    def count_tokens(self, prompt: str) -> int:
        return len(self.encode(prompt))
