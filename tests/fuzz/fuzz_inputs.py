"""Hostile user files for the CLI fuzz test: config.json, hardware and workload files as raw bytes.

Each strategy draws a `Doc`: the bytes to write and the reasons it is known to be invalid (empty when it may be
valid). Files start from something real (a bundled model preset, a bundled hardware preset in its user units,
the README's workload example) and take a few mutations: dropped keys, wrong types, NaN and infinities in every
spelling (JSON `NaN`, YAML `.nan`), negatives, huge and 5000-digit integers, unknown and duplicate keys, deep
nesting, YAML aliases and alias bombs, YAML 1.1 vs 1.2 number forms, non-UTF-8 bytes, truncation.

Only what the issue or the project's rules make certain is tagged invalid (a NaN, a duplicate key, an unknown
hardware or workload key, a bandwidth of 0, `gpus_per_node: 2.7`, ...); a mutation whose right answer is
debatable (a key dropped from config.json, the string "8" for a count) is left untagged, so that only the
never-a-traceback contract applies to it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

PRESETS_DIR = Path(__file__).resolve().parents[2] / "src" / "moelab" / "spec" / "presets"
MODEL_PRESETS = {p.stem: json.loads(p.read_text()) for p in sorted((PRESETS_DIR / "models").glob("*.json"))}
HARDWARE_TABLE = json.loads((PRESETS_DIR / "hardware.json").read_text())
HARDWARE_PRESETS = HARDWARE_TABLE["presets"]


@dataclass
class Doc:
    """A file's bytes and why it is known to be invalid (empty: it may be valid)."""

    data: bytes
    invalid: list[str] = field(default_factory=list)
    kind: str = "file"  # "file"; the special kinds are in fuzz_cases (directory, FIFO, device)


class Raw(str):
    """Text written into a JSON or YAML document as it is (a literal NaN, an anchor, a 1.1 number form)."""


# --- shared hostile values -------------------------------------------------------------------------------

DIGITS_5000 = "9" * 5000
MARKUP = ["[/red]", "[bold]x[/bold", "[link=file:///etc/passwd]x[/link]", "[/]", "\x1b[31mred\x1b[0m"]


def deep_json(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def deep_yaml(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def alias_bomb_yaml(levels: int) -> str:
    """The YAML 'billion laughs': level n is nine references to level n-1 (9**levels strings)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines)


# A value for a numeric field: (raw text or Python value, invalid reason or None).
def _num(value, why):
    return (value, why)


NUMERIC_HOSTILE_JSON = [
    _num(Raw("NaN"), "NaN literal"), _num(Raw("Infinity"), "Infinity literal"),
    _num(Raw("-Infinity"), "-Infinity literal"), _num(Raw("1e400"), "1e400 overflows to inf"),
    _num(-1, "negative"), _num(-1e-9, "negative"), _num(0, None), _num(2**70, "2**70 beyond any bound"),
    _num(Raw(DIGITS_5000), "5000-digit integer"), _num(1e30, None), _num(1e300, "1e300 beyond any bound"),
    _num(2.7, None), _num("abc", "a string"), _num("[/red]", "a string"), _num(None, None), _num(True, None),
    _num([], "a list"), _num({}, "a mapping"), _num([1, 2], "a list"), _num(Raw(deep_json(100)), "nesting 100"),
    _num(Raw(deep_json(20000)), "nesting 20000"), _num(Raw("01"), "leading zero (not JSON)"),
    _num(Raw("0x10"), "hex (not JSON)"), _num(Raw("+1"), "plus sign (not JSON)"), _num(Raw(".5"), "not JSON"),
    _num("4096", None), _num(1.0, None),
]

NUMERIC_HOSTILE_YAML = [
    _num(Raw(".nan"), ".nan"), _num(Raw(".NaN"), ".NaN"), _num(Raw(".inf"), ".inf"), _num(Raw("-.inf"), "-.inf"),
    _num(Raw("NaN"), "NaN (a string in YAML)"), _num(Raw("nan"), "nan (a string in YAML)"),
    _num(Raw("1e400"), "1e400 overflows to inf"), _num(-1, "negative"), _num(0, None),
    _num(2**70, "2**70 beyond any bound"), _num(Raw(DIGITS_5000), "5000-digit integer"),
    _num(1e300, "1e300 beyond any bound"), _num(Raw("abc"), "a string"), _num(Raw('"[/red]"'), "a string"),
    _num(Raw("yes"), "yes (a string in 1.2, a bool in 1.1)"), _num(Raw("on"), "on (a string in 1.2)"),
    _num(Raw("true"), "a boolean"), _num(Raw("~"), None), _num(Raw("[]"), "a list"), _num(Raw("{}"), "a mapping"),
    _num(Raw("1_000"), "1_000 (a string in 1.2)"), _num(Raw("1:30"), "1:30 (a string in 1.2, 90 in 1.1)"),
    _num(Raw("2024-01-01"), "a date (a string in 1.2)"), _num(Raw("0o17"), None), _num(Raw("017"), None),
    _num(Raw("0x1F"), None), _num(Raw("1e3"), None), _num(Raw("+.5"), None), _num(Raw("1.0e+3"), None),
    _num(Raw('"12"'), None), _num(Raw(deep_yaml(100)), "nesting 100"), _num(Raw(deep_yaml(3000)), "nesting 3000"),
    _num(Raw("!!python/object/apply:os.getcwd []"), "a python tag"), _num(Raw("!!binary aGVsbG8="), "binary"),
    _num(Raw("*undefined_alias"), "an undefined alias"),
]


VALID_YAML_FORMS = ("0o17", "017", "0x1F", "1e3", "+.5", "1.0e+3", '"12"')


def _is_null(value) -> bool:
    return value is None or isinstance(value, Raw) and value.strip() in ("~", "null")


def numeric_bad(value, why, positive: bool, required: bool, big_ok: bool = False) -> str | None:
    """Why `value` (drawn with reason `why`) is invalid for a numeric field, or None when it may be valid."""
    if _is_null(value):
        return "null for a required field" if required else None
    if why and not (big_ok and why.startswith("1e300")):
        return why
    if isinstance(value, bool):
        return "a boolean"
    if positive and isinstance(value, int | float) and value <= 0:
        return "not positive"
    return None


# --- JSON text with raw parts ----------------------------------------------------------------------------

def to_json(obj, raw_ok: bool = True) -> str:
    """json.dumps, except that Raw strings are written as they are."""
    raws: dict[str, str] = {}

    def swap(o):
        if isinstance(o, Raw):
            key = f"@@RAW{len(raws)}@@"
            raws[key] = str(o)
            return key
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, list):
            return [swap(v) for v in o]
        return o

    text = json.dumps(swap(obj), indent=1)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return text


def to_yaml_value(v) -> str:
    if isinstance(v, Raw):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return ".nan" if math.isnan(v) else (".inf" if v > 0 else "-.inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_yaml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(to_yaml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_yaml(pairs: list[tuple[str, object]]) -> str:
    """Top-level `key: value` lines (pairs, so that a key can repeat)."""
    return "".join(f"{k}: {to_yaml_value(v)}\n" for k, v in pairs)


# --- byte-level damage -----------------------------------------------------------------------------------

@st.composite
def damaged(draw, text: str, invalid: list[str], hostile: bool = True) -> Doc:
    """`text` as UTF-8, sometimes damaged (when `hostile`): non-UTF-8 bytes, truncation, a BOM, emptiness."""
    data = text.encode("utf-8")
    if not hostile:
        return Doc(data, invalid)
    how = draw(st.sampled_from(["none"] * 6 + ["latin1", "ff", "truncate", "bom", "empty", "nul"]))
    if how == "latin1":
        return Doc(data.replace(b"\n", " # caf\xe9\n".encode("latin-1"), 1) if b"\n" in data
                   else data + "caf\xe9".encode("latin-1"), invalid + ["non-UTF-8 bytes"])
    if how == "ff":
        cut = draw(st.integers(0, len(data)))
        return Doc(data[:cut] + b"\xff\xfe\x80" + data[cut:], invalid + ["non-UTF-8 bytes"])
    if how == "truncate" and len(data) > 4:
        cut = draw(st.integers(1, len(data) - 2))
        return Doc(data[:cut], invalid)  # may still parse (YAML): no tag of its own
    if how == "bom":
        return Doc(b"\xef\xbb\xbf" + data, invalid)
    if how == "empty":
        return Doc(b"", invalid + ["empty file"])
    if how == "nul":
        return Doc(data + b"\x00\x00", invalid + ["NUL bytes"])
    return Doc(data, invalid)


# --- config.json -----------------------------------------------------------------------------------------

CORE_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size")
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
TOPK_KEYS = ("num_experts_per_tok",)


def tiny_config() -> dict:
    """A valid, tiny llama config (fits the bench and train paths)."""
    return {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": False}


@st.composite
def config_docs(draw, small: bool = False, hostile: bool = True) -> Doc:
    """A config.json: a bundled preset (or a tiny llama), mutated when `hostile` (else at most an unknown key)."""
    names = ["<tiny>"] + ([] if small else list(MODEL_PRESETS))
    name = draw(st.sampled_from(names))
    cfg = tiny_config() if name == "<tiny>" else json.loads(json.dumps(MODEL_PRESETS[name]))
    invalid: list[str] = []
    dup: tuple[str, object] | None = None
    for _ in range(draw(st.integers(1 if hostile else 0, 3 if hostile else 1))):
        op = draw(st.sampled_from(["drop", "value", "value", "core", "core", "topk", "unknown", "dup", "root", "rope",
                                   "deep", "rope_theta", "eps"] if hostile else ["unknown"]))
        keys = sorted(cfg) if isinstance(cfg, dict) else []
        if op == "drop" and keys:
            cfg.pop(draw(st.sampled_from(keys)))
        elif op == "value" and keys:
            value, why = draw(st.sampled_from(NUMERIC_HOSTILE_JSON))
            cfg[draw(st.sampled_from(keys))] = value
            if why and isinstance(value, Raw):  # a literal JSON cannot hold, wherever it sits
                invalid.append(f"config.json: {why}")
            elif why and why.startswith(("5000", "nesting")):
                invalid.append(f"config.json: {why}")
        elif op == "core" and isinstance(cfg, dict):
            key = draw(st.sampled_from([k for k in CORE_SIZE_KEYS if k in cfg] or ["hidden_size"]))
            value, why = draw(st.sampled_from(NUMERIC_HOSTILE_JSON + [_num(Raw("1e30"), "1e30 layers")]))
            cfg[key] = value
            bad = numeric_bad(value, why, positive=True, required=False)
            if bad and value != "4096":
                invalid.append(f"config.json {key}: {bad}")
        elif op == "topk" and isinstance(cfg, dict):
            experts = next((k for k in EXPERT_KEYS if k in cfg), None)
            if experts and isinstance(cfg.get(experts), int):
                cfg["num_experts_per_tok"] = cfg[experts] + draw(st.integers(1, 5))
                invalid.append("config.json: top_k above the expert count")
        elif op == "unknown" and isinstance(cfg, dict):
            cfg[draw(st.sampled_from(["foo", "hiden_size", "[/red]", "x" * 300]))] = draw(
                st.sampled_from([1, "x", Raw("null"), [1]]))
        elif op == "dup" and isinstance(cfg, dict) and keys:
            dup = (draw(st.sampled_from(keys)), draw(st.sampled_from([1, 7, "x"])))
            invalid.append("config.json: duplicate key")
        elif op == "root":
            cfg = draw(st.sampled_from([[], "config", 1, None, [tiny_config()]]))
            invalid.append("config.json: top level not an object")
        elif op == "rope" and isinstance(cfg, dict):
            cfg["rope_scaling"] = draw(st.sampled_from([
                {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192},
                {"type": "dynamic", "factor": 2.0}, {"type": "yarn", "factor": Raw("NaN")}, "yarn", [1],
                {"type": "[/red]"}]))
            if isinstance(cfg["rope_scaling"], dict) and cfg["rope_scaling"].get("factor") == Raw("NaN"):
                invalid.append("config.json: NaN literal")
        elif op == "deep" and isinstance(cfg, dict):
            levels = draw(st.sampled_from([65, 100, 5000, 100000]))
            cfg["extra"] = Raw(draw(st.sampled_from([deep_json(levels), '{"a":' * levels + "1" + "}" * levels])))
            invalid.append(f"config.json: nesting {levels}")
        elif op == "rope_theta" and isinstance(cfg, dict):
            cfg["rope_theta"] = draw(st.sampled_from(["abc", Raw("NaN"), -1, 0, Raw("1e400")]))
            invalid.append("config.json: rope_theta not a positive finite number")
        elif op == "eps" and isinstance(cfg, dict):
            cfg["rms_norm_eps"] = draw(st.sampled_from([Raw("NaN"), Raw("Infinity"), -1e-6, "1e-6"]))
            if cfg["rms_norm_eps"] != "1e-6":
                invalid.append("config.json: rms_norm_eps not a positive finite number")
    text = to_json(cfg)
    if dup is not None and text.rstrip().endswith("}"):
        text = text.rstrip()[:-1].rstrip() + f',\n "{dup[0]}": {json.dumps(dup[1])}\n}}\n'
    return draw(damaged(text, invalid, hostile))


# --- hardware files --------------------------------------------------------------------------------------

HW_REQUIRED = ("peak_tflops", "memory_gb", "memory_bandwidth_gbps", "tdp_watts", "usd_per_hour")
HW_BANDWIDTHS = ("memory_gb", "memory_bandwidth_gbps", "intra_node_gbps", "inter_node_gbps", "tdp_watts")
HW_OTHER_NUMBERS = ("intra_node_latency_us", "inter_node_latency_us", "usd_per_hour", "layer_overhead_us",
                    "moe_layer_overhead_us", "runtime_overhead_gb")
HW_FRACTIONS = ("compute_efficiency", "bandwidth_efficiency", "link_efficiency", "memory_utilization")
HW_TYPOS = {"memory_bandwith_gbps": "memory_bandwidth_gbps", "memory_GB": "memory_gb", "tdp": "tdp_watts",
            "gpu_per_node": "gpus_per_node", "peak_tflop": "peak_tflops", "intranode_gbps": "intra_node_gbps"}


@st.composite
def hardware_pairs(draw, hostile: bool = True) -> tuple[list[tuple[str, object]], list[str], bool]:
    """(top-level key/value pairs, invalid reasons, whether a YAML alias is used) of a hardware file."""
    preset = draw(st.sampled_from(sorted(HARDWARE_PRESETS)))
    hw: dict[str, object] = json.loads(json.dumps(HARDWARE_PRESETS[preset]))
    if draw(st.booleans()):
        hw["name"] = draw(st.sampled_from(["my-gpu", *MARKUP, "x" * 5000, "", "caf\u00e9 \u2603"]))
    invalid: list[str] = []
    extra: list[tuple[str, object]] = []
    alias = False
    for _ in range(draw(st.integers(1 if hostile else 0, 3 if hostile else 1))):
        op = draw(st.sampled_from(["drop_req", "drop_opt", "typo", "unknown", "bandwidth", "bandwidth", "other",
                                   "fraction", "gpn", "gpn", "peaks", "sources", "dup", "alias", "bomb", "deep"]
                                  if hostile else ["drop_opt", "extreme"]))
        if op == "drop_req":
            key = draw(st.sampled_from(HW_REQUIRED))
            if hw.pop(key, None) is not None:
                invalid.append(f"hardware: missing {key}")
        elif op == "drop_opt":
            hw.pop(draw(st.sampled_from(["intra_node_gbps", "inter_node_latency_us", "sources", "name"])), None)
        elif op == "typo":
            typo = draw(st.sampled_from(sorted(HW_TYPOS)))
            hw[typo] = hw.get(HW_TYPOS[typo], 8)
            invalid.append(f"hardware: unknown key {typo}")
        elif op == "unknown":
            key = draw(st.sampled_from(["foo", "[/red]", "measurement", "x" * 200]))
            hw[key] = draw(st.sampled_from([1, "x", Raw("null")]))
            invalid.append(f"hardware: unknown key {key[:20]}")
        elif op in ("bandwidth", "other"):
            key = draw(st.sampled_from(HW_BANDWIDTHS if op == "bandwidth" else HW_OTHER_NUMBERS))
            value, why = draw(st.sampled_from(NUMERIC_HOSTILE_YAML))
            hw[key] = value
            bad = numeric_bad(value, why, positive=op == "bandwidth", required=key in HW_REQUIRED)
            if bad:
                invalid.append(f"hardware {key}: {bad}")
        elif op == "fraction":
            key = draw(st.sampled_from(HW_FRACTIONS))
            hw[key] = draw(st.sampled_from([0, 1.5, -0.1, Raw(".nan"), 2]))
            invalid.append(f"hardware {key}: outside (0, 1]")
        elif op == "gpn":
            hw["gpus_per_node"] = draw(st.sampled_from([2.7, 0, -8, 2**70, Raw(".inf"), Raw("1e18")]))
            invalid.append("hardware gpus_per_node: not a positive integer within bounds")
        elif op == "peaks":
            hw["peak_tflops"] = draw(st.sampled_from([{}, [], {"fp64": 10}, {"bf16": Raw(".nan")}, {"bf16": -1},
                                                      {"bf16": Raw(".inf")}, "312", {"bf16": "fast"}]))
            invalid.append("hardware peak_tflops: not a mapping of dtype to a positive number")
        elif op == "sources":
            hw["sources"] = draw(st.sampled_from([["datasheet"], "datasheet", 3, {"datasheet": ["a", "b"]}]))
            invalid.append("hardware sources: not a mapping of strings")
        elif op == "dup":
            key = draw(st.sampled_from(sorted(hw)))
            extra.append((key, hw[key] if not isinstance(hw[key], dict) else 1))
            invalid.append(f"hardware: duplicate key {key}")
        elif op == "extreme":  # valid but far from any GPU: the engine's arithmetic must hold
            hw[draw(st.sampled_from(HW_BANDWIDTHS + HW_OTHER_NUMBERS))] = draw(st.sampled_from(
                [1e-9, 1e-6, 0.001, 1e6, 1e9, 1e12]))
        elif op == "alias" and "memory_gb" in hw:
            alias = True
        elif op == "bomb":
            extra.append(("__bomb__", Raw(str(draw(st.sampled_from([6, 8, 10]))))))
            invalid.append("hardware: alias bomb")
        elif op == "deep":
            levels = draw(st.sampled_from([65, 200, 3000]))
            hw["sources"] = Raw(deep_yaml(levels))
            invalid.append(f"hardware: nesting {levels}")
    return list(hw.items()) + extra, invalid, alias


@st.composite
def hardware_docs(draw, fmt: str | None = None, hostile: bool = True) -> tuple[Doc, str]:
    """(a hardware file, its suffix: .yaml, .yml, .json or none)."""
    pairs, invalid, alias = draw(hardware_pairs(hostile))
    suffix = fmt or draw(st.sampled_from([".yaml", ".yaml", ".json", ".yml", ""]))
    if suffix == ".json":
        if any(k == "__bomb__" for k, _ in pairs) or alias:
            pairs = [(k, v) for k, v in pairs if k != "__bomb__"]
            invalid = [w for w in invalid if "alias bomb" not in w]
        obj = {}
        dups = []
        for k, v in pairs:
            if k in obj:
                dups.append((k, v))
            obj[k] = v
        # YAML spellings are not JSON: a .nan in a .json file is a parse error, which the tags already say
        text = to_json({k: (Raw(to_json_number(v)) if isinstance(v, Raw) else v) for k, v in obj.items()})
        for k, v in dups:
            text = text.rstrip()[:-1].rstrip() + f',\n "{k}": {to_json(v)}\n}}\n'
        return draw(damaged(text, invalid, hostile)), suffix
    lines = []
    for k, v in pairs:
        if k == "__bomb__":
            lines.append(alias_bomb_yaml(int(v)).replace("\n", "\n  ").replace("l0:", "bomb:\n  l0:", 1) + "\n")
        elif alias and k == "memory_gb":
            lines.append(f"memory_gb: &mem {to_yaml_value(v)}\n")
        else:
            lines.append(f"{k}: {to_yaml_value(v)}\n")
    if alias:
        lines.append("runtime_overhead_gb: *mem\n")
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from(["%YAML 1.1\n---\n", "%YAML 1.2\n---\n", "---\n", "# hw\n"])))
    text = "".join(lines)
    if hostile and draw(st.integers(0, 12)) == 0:
        text, invalid = draw(st.sampled_from(["- 1\n- 2\n", "just a string\n", "42\n", "", "---\n...\n",
                                              "a: [1\n"])), invalid + ["hardware: not a mapping"]
    return draw(damaged(text, invalid, hostile)), suffix


def to_json_number(raw: Raw) -> str:
    """A YAML spelling written into JSON: JSON's own NaN/Infinity literals where there is one."""
    table = {".nan": "NaN", ".NaN": "NaN", ".inf": "Infinity", "-.inf": "-Infinity", "~": "null", "yes": '"yes"',
             "on": '"on"', "true": "true"}
    return table.get(str(raw), str(raw) if str(raw)[:1] in "[{\"-0123456789" else json.dumps(str(raw)))


# --- workloads -------------------------------------------------------------------------------------------

WL_REQUIRED = ("hardware", "gpus", "latency_p99_ms", "batch", "prompt", "gen", "task_mix", "training", "candidates")
WL_INTS = ("gpus", "batch", "prompt", "gen")
WL_FLOATS = ("latency_p99_ms", "throughput_tokens_per_s", "memory_budget_gb", "train_tokens", "quality_floor_b")
WL_TYPOS = {"latency_p99": "latency_p99_ms", "gpu": "gpus", "candidate": "candidates", "task-mix": "task_mix",
            "throughput": "throughput_tokens_per_s", "train_token": "train_tokens"}


def readme_workload(small: bool) -> dict:
    """The README's workload example (train_tokens: 2e9 as the README writes it)."""
    return {
        "name": "chat-assistant", "hardware": "H100-SXM", "gpus": 8, "memory_budget_gb": 640,
        "latency_p99_ms": 50, "throughput_tokens_per_s": 3000, "batch": 32, "prompt": 1024, "gen": 256,
        "task_mix": {"reasoning": 0.25, "knowledge": 0.35, "multilingual": 0.15, "code": 0.25},
        "training": "fine-tune", "train_tokens": Raw("2e9"), "quality_floor_b": 25,
        "candidates": ["mixtral-8x7b", "mistral-7b"] if small else
        ["mixtral-8x7b", "llama-3-70b", "mistral-7b", "qwen3-235b-a22b", "deepseek-v3"],
    }


@dataclass
class WorkloadPlan:
    """A workload file and the files it refers to (paths relative to the workload's folder)."""

    doc: Doc
    side_files: dict[str, Doc]


@st.composite
def workload_docs(draw, small: bool = True, hostile: bool = True) -> WorkloadPlan:
    wl = readme_workload(small)
    invalid: list[str] = []
    side: dict[str, Doc] = {}
    extra: list[tuple[str, object]] = []
    alias = False
    for _ in range(draw(st.integers(1 if hostile else 0, 3 if hostile else 2))):
        op = draw(st.sampled_from(["drop_req", "drop_opt", "typo", "dup", "int", "int", "float", "float", "mix",
                                   "training", "candidates", "hardware_file", "hardware_file", "hardware_name",
                                   "batches", "dtype", "name", "alias", "bomb", "deep", "config_candidate"]
                                  if hostile else ["drop_opt", "hardware_file", "name", "config_candidate", "extreme"]))
        if op == "drop_req":
            key = draw(st.sampled_from(WL_REQUIRED))
            if wl.pop(key, None) is not None:
                invalid.append(f"workload: missing {key}")
        elif op == "drop_opt":
            wl.pop(draw(st.sampled_from(["name", "memory_budget_gb", "throughput_tokens_per_s", "train_tokens",
                                         "quality_floor_b"])), None)
        elif op == "typo":
            typo = draw(st.sampled_from(sorted(WL_TYPOS)))
            wl[typo] = wl.get(WL_TYPOS[typo], 1)
            invalid.append(f"workload: unknown key {typo}")
        elif op == "dup":
            key = draw(st.sampled_from(sorted(wl)))
            extra.append((key, draw(st.sampled_from([1, 64, "x"]))))
            invalid.append(f"workload: duplicate key {key}")
        elif op == "int":
            key = draw(st.sampled_from(WL_INTS))
            value, why = draw(st.sampled_from(NUMERIC_HOSTILE_YAML + [_num(2.7, "2.7 for a count"),
                                                                      _num(Raw("1e18"), "1e18 beyond bounds")]))
            wl[key] = value
            bad = numeric_bad(value, why, positive=True, required=True)
            if bad:
                invalid.append(f"workload {key}: {bad}")
        elif op == "float":
            key = draw(st.sampled_from(WL_FLOATS))
            value, why = draw(st.sampled_from(NUMERIC_HOSTILE_YAML))
            wl[key] = value
            bad = numeric_bad(value, why, positive=key == "latency_p99_ms", required=key == "latency_p99_ms",
                              big_ok=key != "train_tokens")
            if bad or (isinstance(value, int | float) and not isinstance(value, bool) and value < 0):
                invalid.append(f"workload {key}: {bad or 'negative'}")
        elif op == "mix":
            wl["task_mix"] = draw(st.sampled_from([
                {"reasoning": -1, "code": 2}, {"reasoning": 0, "knowledge": 0}, {}, {"poetry": 1.0},
                {"reasoning": Raw(".nan")}, {"reasoning": Raw(".inf")}, [0.5, 0.5], "reasoning",
                {"reasoning": 1e308, "code": 1e308}, {"reasoning": "half"}]))
            invalid.append("workload task_mix: not non-negative finite weights of known tasks")
        elif op == "training":
            wl["training"] = draw(st.sampled_from(["pretrain", "", 1, Raw("yes"), "[/red]", ["scratch"]]))
            invalid.append("workload training: not scratch or fine-tune")
        elif op == "candidates":
            wl["candidates"] = draw(st.sampled_from([[], ["no-such-model"], [123], "mixtral-8x7b", [None],
                                                     ["[/red]"], [["mistral-7b"]], ["/dev/zero"]]))
            if wl["candidates"] != "mixtral-8x7b":
                invalid.append("workload candidates: not a list of known models")
        elif op == "config_candidate":
            doc = draw(config_docs(small=True, hostile=hostile))
            name = draw(st.sampled_from(["cand.json", "[red]c/config.json", "c/config.json"]))
            side[name] = doc
            wl["candidates"] = ["mistral-7b", name]
            invalid.extend(doc.invalid)
        elif op == "hardware_file":
            doc, suffix = draw(hardware_docs(hostile=hostile))
            name = draw(st.sampled_from(["hw", "gpu", "[red]hw"])) + suffix
            side[name] = doc
            wl["hardware"] = name
            invalid.extend(doc.invalid)
            if suffix == "" and not doc.invalid:
                pass
        elif op == "hardware_name":
            wl["hardware"] = draw(st.sampled_from(["h100-sxm", "H200", "nope", "[/red]", "", "/dev/zero", ".",
                                                   "../../../etc/hostname"]))
            if wl["hardware"] not in ("h100-sxm", "H200"):
                invalid.append("workload hardware: not a preset or a hardware file")
        elif op == "batches":
            wl["batches"] = draw(st.sampled_from([[1, 8, 64], [0], [-1], [1.5], [2**70], [Raw(".nan")], "8", [],
                                                  [Raw("1e18")]]))
            if wl["batches"] not in ([1, 8, 64], []):
                invalid.append("workload batches: not positive integers within bounds")
        elif op == "dtype":
            wl["dtype"] = draw(st.sampled_from(["fp8", "int4", "fp64", "[/red]", 16]))
            if wl["dtype"] not in ("fp8", "int4"):
                invalid.append("workload dtype: unknown")
        elif op == "name":
            wl["name"] = draw(st.sampled_from([*MARKUP, "x" * 3000, 42, Raw("~"), "caf\u00e9"]))
        elif op == "alias":
            alias = True
        elif op == "extreme":  # valid but extreme: large batches and contexts, tight or loose targets
            key, value = draw(st.sampled_from([
                ("batch", 2**20), ("batch", 4096), ("prompt", 2**20), ("gen", 1), ("gpus", 1), ("gpus", 4096),
                ("latency_p99_ms", 1e-6), ("latency_p99_ms", 1e9), ("throughput_tokens_per_s", 1e12),
                ("memory_budget_gb", 0.001), ("quality_floor_b", 1e6), ("train_tokens", 1.0),
                ("batches", [1, 2**20]), ("task_mix", {"code": 1})]))
            wl[key] = value
        elif op == "bomb":
            extra.append(("__bomb__", Raw(str(draw(st.sampled_from([6, 8, 10]))))))
            invalid.append("workload: alias bomb")
        elif op == "deep":
            levels = draw(st.sampled_from([65, 300, 3000]))
            wl["name"] = Raw(deep_yaml(levels))
            invalid.append(f"workload: nesting {levels}")
    lines = []
    for k, v in list(wl.items()) + extra:
        if k == "__bomb__":
            lines.append("bomb:\n  " + alias_bomb_yaml(int(v)).replace("\n", "\n  ") + "\n")
        elif alias and k == "batch":
            lines.append(f"batch: &b {to_yaml_value(v)}\n")
        else:
            lines.append(f"{k}: {to_yaml_value(v)}\n")
    if alias and "batch" in wl:
        lines.append("quality_floor_b: *b\n")
    text = "".join(lines)
    if hostile and draw(st.integers(0, 15)) == 0:
        text, invalid = draw(st.sampled_from(["- 1\n", "workload\n", "", "{a: 1\n", "\t gpus: 8\n"])), \
            invalid + ["workload: not a mapping"]
    return WorkloadPlan(draw(damaged(text, invalid, hostile)), side)


# --- fit manifests and the result files they name ----------------------------------------------------------

# (max_concurrency, input, output) of the vllm runs a manifest may name; llama-3-8b, bf16, tp1 on the H100-SXM preset
VLLM_SETTINGS = ((1, 1024, 256), (16, 1024, 256), (64, 2048, 512), (256, 512, 128))
FIT_MODEL = "llama-3-8b"


def vllm_figures(concurrency: int, input: int, output: int) -> dict:
    """The engine's mean TTFT, TPOT and output tokens/s of llama-3-8b bf16 tp1 on the H100-SXM preset in this
    setting (a fit from that preset starts at its answer: few iterations)."""
    return dict(_vllm_figures(concurrency, input, output))


@cache
def _vllm_figures(concurrency: int, input: int, output: int) -> tuple:
    from moelab.cost.measurement import Measurement, predict
    from moelab.spec.hardware import load_hardware
    from moelab.spec.presets import load_model

    hw, spec = load_hardware("H100-SXM"), load_model(FIT_MODEL)
    out = []
    for metric in ("ttft_ms", "tpot_ms", "output_tokens_per_second"):
        m = Measurement(model=FIT_MODEL, hardware=hw.name, plan="tp1", dtype="bf16", kv_dtype="bf16", input=input,
                        output=output, mode="serving", metric=metric, value=1.0, concurrency=concurrency,
                        num_prompts=10 * concurrency)
        out.append((metric, predict(m, spec, hw)))
    return tuple(out)


def vllm_run(concurrency: int, input: int, output: int, scale: float = 1.0) -> dict:
    """A `vllm bench serve --save-result` JSON object with the keys vllm/benchmarks/serve.py writes (setup,
    traffic, totals, mean/median/p99 of ttft, tpot, itl), figures the engine's times `scale`."""
    f = vllm_figures(concurrency, input, output)
    n = 10 * concurrency
    ttft, tpot, tps = f["ttft_ms"] * scale, f["tpot_ms"] * scale, f["output_tokens_per_second"] / scale
    run = {"date": "20261201-120000", "endpoint_type": "vllm", "backend": "vllm", "label": None,
           "model_id": "meta-llama/Meta-Llama-3-8B", "tokenizer_id": "meta-llama/Meta-Llama-3-8B", "num_prompts": n,
           "request_rate": "inf", "burstiness": 1.0, "max_concurrency": concurrency, "duration": 60.0,
           "completed": n, "failed": 0, "total_input_tokens": n * input, "total_output_tokens": n * output,
           "request_throughput": tps / output, "request_goodput": None, "output_throughput": tps,
           "total_token_throughput": tps * (input + output) / output}
    for stat in ("mean", "median", "p99"):
        run |= {f"{stat}_ttft_ms": ttft, f"{stat}_tpot_ms": tpot, f"{stat}_itl_ms": tpot}
    return run


def moelab_bench_doc(model: str = FIT_MODEL) -> dict:
    """`moelab bench --json` output as bench.run writes it (rows of prefill and decode times, its workload)."""
    rows = [{"model": model, "phase": phase, "batch": b, "prompt": 128, "measured_s": s * (1 + b / 16)}
            for phase, s in (("prefill", 0.02), ("decode", 0.008)) for b in (1, 4, 16)]
    return {"device": "cuda", "dtype": "bf16", "workload": {"prompt": 128, "gen": 32}, "hardware": {"name": "H100-SXM"},
            "rel_error_definition": "predicted / measured - 1", "rows": rows}


# The figure a metric reads from a vllm run (bench.results._VLLM_METRIC), for a statistic.
def figure_key(metric: str, statistic: str) -> str:
    base = {"ttft_ms": "ttft", "tpot_ms": "tpot", "itl_ms": "itl", "e2e_ms": "e2el"}.get(metric)
    if base:
        return f"{statistic}_{base}_ms"
    return {"output_tokens_per_second": "output_throughput", "total_tokens_per_second": "total_token_throughput",
            "requests_per_second": "request_throughput",
            "output_tokens_per_second_per_gpu": "output_throughput"}[metric]


VLLM_METRICS = ("ttft_ms", "tpot_ms", "output_tokens_per_second")
FOREIGN_RESULTS = [  # (bytes, why) of files that are not a vllm result
    (b'{"rows": [], "workload": {}, "rel_error_definition": ""}', "a moelab bench file given as vllm"),
    (b"entries:\n  - {file: r.json}\n", "a YAML manifest as a result"),
    (b"peak_tflops: {bf16: 989}\nmemory_gb: 80\n", "a hardware YAML as a result"),
    (json.dumps({"hidden_size": 64, "num_hidden_layers": 2}).encode(), "a config.json as a result"),
    (b"[]", "a JSON list"), (b'"vllm"', "a JSON string"), (b"null", "JSON null"), (b"{}", "an empty object"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "a PNG"),
]


@dataclass
class ResultFile:
    """One manifest entry and its result file (None: the entry names a file the case does not create)."""

    entry: dict
    doc: Doc | None
    invalid: list[str]


@st.composite
def vllm_entry(draw, name: str, hostile: bool) -> ResultFile:
    """A manifest entry of format vllm and its result file, mutated when `hostile` (file and entry alike)."""
    c, i, o = draw(st.sampled_from(VLLM_SETTINGS))
    run = vllm_run(c, i, o, draw(st.sampled_from([1.0, 1.0, 0.5, 1.7])))
    entry: dict = {"file": name, "format": "vllm", "model": FIT_MODEL, "plan": "tp1", "dtype": "bf16"}
    for key, value in draw(st.lists(st.sampled_from([("input", i), ("output", o), ("concurrency", c),
                                                     ("kv_dtype", "bf16"), ("statistic", "median"),
                                                     ("mode", "serving"), ("model", "mistral-7b")]), max_size=3)):
        entry[key] = value
    if draw(st.integers(0, 4)) == 0:
        entry["metrics"] = draw(st.sampled_from([["ttft_ms", "tpot_ms"], ["itl_ms", "output_tokens_per_second"],
                                                 ["requests_per_second", "tpot_ms", "ttft_ms"]]))
    invalid: list[str] = []
    docs = [run]
    for _ in range(draw(st.integers(1, 2)) if hostile else 0):
        op = draw(st.sampled_from(["figure", "figure", "required", "completed", "cap", "speculative", "rate", "setup",
                                   "root", "append", "foreign", "digits", "deep", "entry_key", "entry_drop",
                                   "entry_value", "entry_value", "lengths", "concurrency", "mode", "metrics"]))
        needed = [figure_key(m, entry.get("statistic", "mean")) for m in entry.get("metrics", VLLM_METRICS)]
        if op == "figure":
            key = draw(st.sampled_from(needed))
            run[key] = draw(st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), -1.0, 0, "fast", True,
                                             None, [1.0]]))
            invalid.append(f"result {key}: not a positive finite number")
        elif op == "required":
            key = draw(st.sampled_from(["completed", "request_throughput", "output_throughput"]))
            run.pop(key)
            invalid.append(f"result: no {key}")
        elif op == "completed":
            run["completed"] = draw(st.sampled_from([0, -1, 2.5, True, "10", None]))
            invalid.append("result completed: not a positive count")
        elif op == "cap":
            run["max_concurrency"] = draw(st.sampled_from([0, -4, 1.5, "8", True]))
            invalid.append("result max_concurrency: not a positive count")
        elif op == "speculative":
            run["spec_decode_acceptance_rate"] = 0.7
            invalid.append("result: a speculative-decoding run")
        elif op == "rate":
            run["request_rate"] = draw(st.sampled_from([-1, 0, "fast", Raw("NaN"), None, "Infinity"]))
            invalid.append("result request_rate: not positive or \"inf\"")
        elif op == "setup":
            run[draw(st.sampled_from(["model_id", "label", "backend"]))] = draw(st.sampled_from([123, ["x"], {}]))
            invalid.append("result: a setup field not a string")
        elif op == "root":
            docs = [draw(st.sampled_from([[], [run], "run", 7]))]
            invalid.append("result: not a JSON object")
        elif op == "append":  # --append-result: one run per line, each checked
            docs = [run, vllm_run(c, i, o)]
        elif op == "foreign":
            data, why = draw(st.sampled_from(FOREIGN_RESULTS))
            return ResultFile(entry, Doc(data), [f"result: {why}"])
        elif op == "digits":
            run["num_prompts"] = Raw(DIGITS_5000)
            invalid.append("result: a 5000-digit integer")
        elif op == "deep":
            levels = draw(st.sampled_from([100, 100000]))
            run["extra"] = Raw(deep_json(levels))
            if levels > 10000:
                invalid.append(f"result: nesting {levels}")
        elif op == "entry_key":
            entry[draw(st.sampled_from(["fromat", "[/red]", "plans", "x" * 300]))] = "tp1"
            invalid.append("manifest entry: unknown key")
        elif op == "entry_drop":
            key = draw(st.sampled_from(["file", "format", "model", "plan", "dtype"]))
            entry.pop(key, None)
            invalid.append(f"manifest entry: no {key}")
        elif op == "entry_value":
            key, value = draw(st.sampled_from([
                ("format", "sglang"), ("format", "VLLM"), ("format", 1), ("plan", "tp0"), ("plan", "[/red]"),
                ("plan", ""), ("plan", f"tp{2**70}"), ("dtype", "fp64"), ("dtype", ""), ("kv_dtype", "int3"),
                ("input", 0), ("input", -1), ("input", 2**70), ("input", "abc"), ("input", Raw(".nan")),
                ("output", 2.5), ("concurrency", 0), ("concurrency", 2**70), ("statistic", "p99"),
                ("metrics", []), ("metrics", ["speed"]), ("metrics", "ttft_ms"), ("bench_model", FIT_MODEL),
                ("model", "nope"), ("model", "[/red]"), ("model", "/dev/zero"), ("model", ""), ("file", ""),
                ("file", 7), ("model", None)]))
            entry[key] = value
            invalid.append(f"manifest entry {key}: {value!r}"[:80])
        elif op == "lengths":
            entry["input"] = max(1, i // 4)
            invalid.append("manifest input far from the file's mean")
        elif op == "concurrency":
            entry["concurrency"] = c + 1
            invalid.append("manifest concurrency not the file's max_concurrency")
        elif op == "mode":
            entry["mode"] = draw(st.sampled_from(["static", "STATIC", "burst"]))
            invalid.append("manifest mode: not serving or offline for a vllm run")
        elif op == "metrics":
            entry["metrics"] = ["e2e_ms"]
            invalid.append("manifest metrics: e2e_ms, which the file lacks")
    text = "\n".join(to_json(d).replace("\n", "") if len(docs) > 1 else to_json(d) for d in docs) + "\n"
    return ResultFile(entry, draw(damaged(text, invalid, hostile and draw(st.booleans()))), invalid)


@st.composite
def moelab_entry(draw, name: str, hostile: bool) -> ResultFile:
    """A manifest entry of format moelab and its `moelab bench --json` file."""
    doc = moelab_bench_doc()
    entry: dict = {"file": name, "format": "moelab", "model": FIT_MODEL}
    invalid: list[str] = []
    for _ in range(draw(st.integers(1, 2)) if hostile else 0):
        op = draw(st.sampled_from(["row", "workload", "vllm_as_moelab", "entry", "no_rows"]))
        if op == "row":
            key, value = draw(st.sampled_from([("measured_s", Raw("NaN")), ("measured_s", 0), ("measured_s", -1e-3),
                                               ("batch", 0), ("batch", True), ("phase", "train"), ("model", 7),
                                               ("prompt", "128")]))
            doc["rows"][draw(st.integers(0, len(doc["rows"]) - 1))][key] = value
            invalid.append(f"bench row {key}: {value!r}")
        elif op == "workload":
            doc["workload"][draw(st.sampled_from(["prompt", "gen"]))] = draw(st.sampled_from([0, -1, "x", None]))
            invalid.append("bench workload: not a positive integer")
        elif op == "vllm_as_moelab":
            doc = vllm_run(*VLLM_SETTINGS[0])
            invalid.append("a vllm result given as moelab")
        elif op == "entry":
            key, value = draw(st.sampled_from([("concurrency", 4), ("statistic", "mean"), ("mode", "serving"),
                                               ("metrics", ["output_tokens_per_second"]), ("dtype", "fp8"),
                                               ("input", 64), ("bench_model", "mixtral-8x7b")]))
            entry[key] = value
            invalid.append(f"manifest moelab entry {key}: {value!r}")
        elif op == "no_rows":
            doc["rows"] = []
            invalid.append("bench file: no rows")
    return ResultFile(entry, Doc(to_json(doc).encode()), invalid)


MANIFEST_NAMES = ["fit", "fit", "m/fit", "[red]m/fit", "caf\u00e9 fit"]  # manifest_docs adds the suffix
# Where an entry's file may point: (name relative to the manifest's folder, or None for the result's own name;
# what the case creates there: "result", a special Doc, or nothing; why that is invalid)
RESULT_PLACES = [
    ("gone.json", None, "a missing result file"), ("../../escaped.json", None, "a missing result file outside"),
    ("{CASE}/escaped.json", None, "a missing result file outside"), ("sub/../../../gone.json", None, "missing"),
    ("/dev/zero", None, "a device as a result"), ("/proc/self/status", None, "not a result file"),
    ("/etc/hostname", None, "not a result file"), (".", None, "a folder as a result"), ("/", None, "a folder"),
    ("d.json", "dir", "a folder as a result"), ("f.json", "fifo", "a FIFO as a result"),
]


@st.composite
def manifest_docs(draw, folder: str, stem: str, hostile: bool) -> tuple[Doc, dict[str, Doc], str]:
    """(a fit manifest, the files it names as {path relative to the case's working folder: Doc}, its suffix).
    `folder` is the manifest's folder (relative, ending in / or empty); `stem` keeps two manifests' files apart."""
    def key(rel: str) -> str:
        return os.path.normpath(folder + rel)

    entries: list[dict] = []
    files: dict[str, Doc] = {}
    invalid: list[str] = []
    for n in range(draw(st.integers(1, 3))):
        name = f"{stem}r{n}.json"
        bad = hostile and draw(st.booleans())
        rf = draw(moelab_entry(name, bad) if draw(st.integers(0, 4)) == 0 else vllm_entry(name, bad))
        invalid.extend(rf.invalid)
        place = draw(st.sampled_from(["here", "here", "here", "sub", "outside", "outside_abs"]
                                     + (["bad"] * 2 if bad else [])))
        if place == "bad":
            where, kind, why = draw(st.sampled_from(RESULT_PLACES))
            rf.entry["file"] = where
            if kind == "dir":
                files[key(where)] = Doc(b"", kind="dir")
            elif kind == "fifo":
                files[key(where)] = Doc(b"", kind="fifo")
            invalid.append(f"manifest: {why}")
        elif rf.doc is not None and isinstance(rf.entry.get("file"), str) and rf.entry["file"] == name:
            if place == "sub":
                rf.entry["file"] = f"runs/{name}"
                files[key(f"runs/{name}")] = rf.doc
            elif place == "outside":  # above the manifest's folder, inside the case: a path the user may give
                rf.entry["file"] = f"../{name}" if folder else f"../{stem}out/{name}"
                files[key(rf.entry["file"])] = rf.doc
            elif place == "outside_abs":  # an absolute path, into the case's own folder
                rf.entry["file"] = f"{{CASE}}/{stem}abs/{name}"
                files[f"../{stem}abs/{name}"] = rf.doc
            else:
                files[key(name)] = rf.doc
        entries.append(rf.entry)
    top: list[tuple[str, object]] = [("entries", entries)]
    if hostile and draw(st.integers(0, 2)) == 0:
        op = draw(st.sampled_from(["empty", "not_list", "extra", "dup", "drop", "root", "bomb", "deep", "tag"]))
        if op == "empty":
            top = [("entries", [])]
        elif op == "not_list":
            top = [("entries", draw(st.sampled_from([entries[0], "r0.json", 3, None])))]
        elif op == "extra":
            top.append((draw(st.sampled_from(["entry", "hardware", "[/red]"])), 1))
        elif op == "dup":
            top.append(("entries", entries))
        elif op == "drop":
            top = [("entrys", entries)]
        elif op == "root":
            top = [("__root__", draw(st.sampled_from([Raw("[]"), Raw('"fit"'), Raw("42")])))]
        elif op == "bomb":
            top.append(("__bomb__", Raw(str(draw(st.sampled_from([6, 9]))))))
        elif op == "deep":
            top.append(("deep", Raw(deep_yaml(draw(st.sampled_from([200, 3000]))))))
        elif op == "tag":
            top.append(("x", Raw("!!python/object/apply:os.getcwd []")))
        invalid.append(f"manifest: {op}")
    suffix = draw(st.sampled_from([".yaml", ".yaml", ".json", ".yml", ""]))
    if suffix == ".json":
        if top[0][0] == "__root__":
            text = to_json_number(top[0][1])
        else:
            obj: dict = {}
            for k, v in top:
                if k in ("__bomb__",) or isinstance(v, Raw) and k == "x":
                    continue
                obj[k] = v if not isinstance(v, Raw) else Raw(str(v))
            text = to_json(obj)
            if sum(k == "entries" for k, _ in top) > 1:
                text = text.rstrip()[:-1].rstrip() + f',\n "entries": {to_json(entries)}\n}}\n'
            if any(k in ("__bomb__", "x") for k, _ in top):
                text += "}"  # what JSON cannot say, broken instead
    else:
        lines = []
        for k, v in top:
            if k == "__root__":
                lines.append(f"{v}\n")
            elif k == "__bomb__":
                lines.append("bomb:\n  " + alias_bomb_yaml(int(v)).replace("\n", "\n  ") + "\n")
            else:
                lines.append(f"{json.dumps(k)}: {to_yaml_value(v)}\n")
        text = "".join(lines)
    return draw(damaged(text, invalid, hostile)), files, suffix
