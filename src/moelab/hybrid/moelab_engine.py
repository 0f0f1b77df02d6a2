"""A run answered by moelab's own generation: its model (float32, eval mode) and tokenizer, one greedy answer per
query through moelab.eval.generate.greedy_answer (batch 1, KV cache, the token log-probabilities and the wall
seconds of prefill + decode)."""

from __future__ import annotations


class MoelabEngine:
    kind = "moelab"

    def __init__(self, source, max_new_tokens: int, stop: str = "\n") -> None:
        from tokenizers import Tokenizer

        self.source, self.max_new_tokens, self.stop = source, max_new_tokens, stop
        self.model = source.load_model()
        self.tokenizer = Tokenizer.from_str(source.tokenizer_json())
        self.environment = {"engine": "moelab eager (torch, CPU, float32, batch 1, KV cache)"}

    def __enter__(self) -> MoelabEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.model = None

    def answer(self, prompt: str):
        from moelab.eval.generate import greedy_answer

        return greedy_answer(self.model, self.tokenizer, prompt, self.max_new_tokens, stop=self.stop)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt, add_special_tokens=False).ids)
