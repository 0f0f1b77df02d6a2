"""`moelab export`: a moelab run or a Hugging Face folder as a folder a serving engine (vLLM) loads.

The folder holds what `transformers.AutoModelForCausalLM.from_pretrained` and vLLM read: config.json and
model.safetensors written by moelab.nn.hf.save_pretrained (the family's own tensor layout: tiny-dense as Llama,
tiny-moe as Mixtral), the tokenizer as a Hugging Face fast tokenizer (tokenizer.json, tokenizer_config.json,
special_tokens_map.json) and generation_config.json. A run's tokenizer is the one it trained with: final/
tokenizer.json, or for a run written before runs kept it, the same tokenizer rebuilt from the run's corpus and
vocabulary size (it is trained deterministically and cached by corpus hash). An architecture no Hugging Face
family can state is refused in one line. Every file is written atomically; nothing outside `out` is touched.

A quantized run (moelab quantize) is exported with its weights dequantized to float32 (q * scale): no serving
engine reads moelab's int8/int4 layout. The export says so: Exported.dequantized and the mark file's
"dequantized" hold the run's quantization layout (the weights carry its rounding, not its memory saving).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moelab.data.cache import atomic_write_text
from moelab.errors import MoelabError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EXPORT_MARK = "moelab_export.json"  # what was exported from where; marks a folder as moelab's export


@dataclass(frozen=True)
class Exported:
    folder: Path
    source: str  # "run" or "hf"
    model_type: str  # the Hugging Face family written (config.json's model_type)
    architecture: str  # config.json's architectures[0], what vLLM looks up
    name: str  # the model's name (the run's preset, or the folder's name)
    max_position: int | None
    dequantized: dict | None = None  # a quantized run's layout: its weights were written dequantized (float32)


def is_servable_folder(path: Path) -> bool:
    """A Hugging Face folder with weights and a tokenizer: what a serving engine loads as it is."""
    return ((path / "config.json").is_file() and any(path.glob("*.safetensors"))
            and (path / "tokenizer.json").is_file())


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MoelabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _json_text(obj: Any) -> str:
    """JSON as transformers' save_pretrained writes config files."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def run_tokenizer_json(final: Path, meta: dict) -> str:
    """The tokenizers JSON of the run whose final/ folder is `final`: its own file, else rebuilt from its config."""
    own = final / "tokenizer.json"
    if own.is_file():
        return own.read_text()
    from moelab.data.corpus import default_corpus, load_corpus
    from moelab.data.split import split_documents
    from moelab.data.tokenizer import train_tokenizer

    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data, vocab = config.get("data"), config.get("vocab_size", 2048)
    try:
        docs = (default_corpus(config.get("max_bytes_per_domain", 1_500_000), corpus=config.get("corpus", "default"))
                if data is None else load_corpus(data))
    except MoelabError as e:
        raise MoelabError(f"{final}: the run keeps no tokenizer.json and its corpus cannot be read again to "
                          f"rebuild it ({e})") from None
    return train_tokenizer(split_documents(docs)["train"], vocab).to_str()


def hf_tokenizer_files(tokenizer_json: str, max_length: int | None) -> dict[str, Any]:
    """tokenizer_config.json and special_tokens_map.json for a moelab byte-level BPE tokenizer: a
    PreTrainedTokenizerFast whose <|endoftext|> (id 0) is the BOS, EOS and padding token, with no BOS added
    (moelab's models were trained on raw token streams)."""
    from moelab.data.tokenizer import EOT

    special = {"bos_token": EOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "add_bos_token": False,
              "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "model_max_length": max_length or 1_000_000,
              "added_tokens_decoder": {"0": {"content": EOT, "lstrip": False, "normalized": False, "rstrip": False,
                                             "single_word": False, "special": True}}}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def _check_out(out: Path, source: Path) -> None:
    if out.resolve() == source.resolve():
        raise MoelabError(f"--out {out} is the folder being exported; choose another")
    if out.exists() and not out.is_dir():
        raise MoelabError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_MARK).is_file():
        raise MoelabError(f"--out {out} is a folder that holds other files; give an empty or new folder (or an "
                          "earlier moelab export, which is replaced)")


def export(ref: str | Path, out: str | Path) -> Exported:
    """Write the run or Hugging Face folder `ref` into `out` as a servable Hugging Face folder."""
    from moelab.bench.models import load_run_weights, resolve_spec
    from moelab.mitigate.runs import check_quantization
    from moelab.nn.hf import hf_config, load_pretrained, save_pretrained
    from moelab.userfile import load_user_file

    ref, out = str(ref), Path(out)
    path = Path(ref)
    if not path.is_dir():
        raise MoelabError(f"{ref}: not a folder; export takes a moelab run folder (moelab train --out) or a "
                          "Hugging Face folder (config.json, *.safetensors, tokenizer.json)")
    if not any((path / f).is_file() for f in ("final/meta.json", "meta.json", "config.json")):
        raise MoelabError(f"{ref}: neither a moelab run (final/meta.json) nor a Hugging Face folder (config.json)")
    spec, source, folder = resolve_spec(str(path.resolve()))  # a folder named like a preset is still the folder
    if source not in ("run", "hf") or folder is None:
        raise MoelabError(f"{ref}: neither a moelab run (final/meta.json) nor a Hugging Face folder with weights")
    quantization = None
    _check_out(out, folder)
    import torch

    from moelab.nn.model import build_model

    if source == "run":
        meta = load_user_file(folder / "meta.json", "moelab run metadata")
        model = build_model(spec)
        quantization = check_quantization(meta.get("quantization"), folder / "meta.json") if isinstance(
            meta, dict) else None
        if quantization:
            from moelab.mitigate.quantize import apply_layout, to_float

            apply_layout(model, quantization)
        load_run_weights(model, folder)
        if quantization:
            model = to_float(model, spec)
        tokenizer_json = run_tokenizer_json(folder, meta if isinstance(meta, dict) else {})
        # <|endoftext|> (id 0) starts, ends and pads; greedy by default
        generation = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "do_sample": False}
        copied = {"tokenizer.json": tokenizer_json, "generation_config.json": _json_text(generation),
                  **{k: _json_text(v) for k, v in hf_tokenizer_files(tokenizer_json, spec.max_position).items()}}
    else:
        if not (folder / "tokenizer.json").is_file():
            raise MoelabError(f"{folder}: has no tokenizer.json; a serving engine needs the model's tokenizer "
                              "(save it with tokenizer.save_pretrained into the folder)")
        model = load_pretrained(folder)
        copied = {name: _text(folder / name) for name in (*TOKENIZER_FILES, "generation_config.json")
                  if (folder / name).is_file()}
    model = model.to(torch.float32) if model.embed_tokens.weight.dtype == torch.float64 else model
    hf_config(model)  # refuses, in one line, a model no Hugging Face family can state, before out is made
    out.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, "generation_config.json", "model.safetensors.index.json", EXPORT_MARK):
        (out / name).unlink(missing_ok=True)  # an earlier export's files, so that none outlives it
    save_pretrained(model, out)
    config = json.loads((out / "config.json").read_text())
    if source == "run":  # <|endoftext|> (id 0) ends and pads, for engines that read only config.json
        config.update(bos_token_id=0, eos_token_id=0, pad_token_id=0)
        atomic_write_text(out / "config.json", _json_text(config))
    for name, text in copied.items():
        atomic_write_text(out / name, text)
    exported = Exported(folder=out, source=source, model_type=config["model_type"],
                        architecture=(config.get("architectures") or ["?"])[0], name=spec.name,
                        max_position=spec.max_position, dequantized=quantization or None)
    mark = {"from": str(Path(ref).resolve()), "source": source, "name": spec.name, "model_type": exported.model_type}
    if quantization:
        mark["dequantized"] = {**quantization, "note": "moelab quantize's weights, written dequantized to float32 "
                                                       "(q * scale): a serving engine cannot read the int8/int4 layout"}
    atomic_write_text(out / EXPORT_MARK, _json_text(mark))
    return exported
