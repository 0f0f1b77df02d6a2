"""Hypothesis strategies for whole CLI cases: an argv for `moelab.cli.main` and the files it names.

The options of a command are read from the typer app itself (names, types, declared ranges, flags), so an
option added later is fuzzed without a change here; what an option *means* (a model, a hardware file, a dtype,
a positive count) comes from its name. `REGISTRY` maps every command to its strategy; the test fails for a
command the app has and the registry lacks.

Long commands (train, train-compare, bench, calibrate, study, serve-bench, the transforms: prune, quantize,
upcycle, upcycle-compare, and probe, hybrid, sweep) are fuzzed on their validation path only: each of their
cases carries at least one known-invalid argument (a *killer*) that validation must catch before any work, or uses
options that finish at once (a cached calibration; a train-compare that the harness stops where training would
begin). Paths are relative to
the case's working folder (the current directory while a case runs); `{CASE}` stands for the case's own folder,
where nothing but its working folder, MOELAB_HOME and MOELAB_CACHE may appear.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache

import click
from fuzz_inputs import (
    DIGITS_5000,
    MANIFEST_NAMES,
    MARKUP,
    MODEL_PRESETS,
    VLLM_SETTINGS,
    Doc,
    config_docs,
    hardware_docs,
    manifest_docs,
    to_json,
    vllm_figures,
    workload_docs,
)
from hypothesis import strategies as st

DIR = Doc(b"", kind="dir")
FIFO = Doc(b"", kind="fifo")

LONG = ("train", "train-compare", "bench", "calibrate", "study", "serve-bench", "prune", "quantize", "upcycle",
        "upcycle-compare", "probe", "hybrid", "sweep")
TRAIN_PRESETS = ("tiny-dense", "tiny-moe", "tiny-moe-fine", "tiny-dense-wide")
DEFAULT_OUT = {"train-compare": "runs/compare", "study": "runs/study", "serve-bench": "runs/serve-bench"}
OFTEN = {"params"}  # options drawn in half the cases, not a quarter (fit: few points fit few parameters)


@dataclass
class Case:
    """One CLI invocation and the world it runs in."""

    command: str
    argv: list[str]
    files: dict[str, Doc] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # known-invalid ingredients: exit 2 is the only answer
    json_out: bool = False  # stdout must be one strict JSON document when the exit code is 0
    writes: list[str] = field(default_factory=list)  # paths (relative to the working folder) it may write under
    store: str = "absent"  # $MOELAB_HOME/runs.sqlite: absent, rows, garbage, empty, directory, corrupt-row, locked
    calibration: str = "absent"  # this machine's cached calibration: absent, valid, corrupt, directory
    may_reach_work: bool = False  # a valid long case the harness stops where work would begin
    must_succeed: bool = False  # known-valid (the good inputs): exit 0 is the only answer
    explicit: bool = False  # one of the reproducers (fuzz_seeds), not drawn

    def size(self) -> int:
        return sum(len(a) for a in self.argv) + sum(len(d.data) for d in self.files.values())


@dataclass
class Part:
    """Some argv tokens, the files they need and what makes them invalid."""

    tokens: list[str]
    files: dict[str, Doc] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)
    positions: int | None = None  # a model's context length, when known


# --- the app's parameters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One parameter of a command as the fuzzer needs it, read from typer (its own click fork or click)."""

    name: str
    opts: tuple[str, ...]
    secondary_opts: tuple[str, ...]
    positional: bool
    kind: str  # int, float, bool, str
    low: float | None
    high: float | None
    required: bool
    nargs: int
    is_flag: bool


def _kind(p) -> str:
    import typing

    descriptor = getattr(p, "type_descriptor", None)
    if descriptor is not None:
        ann = descriptor.annotation
        while typing.get_args(ann):
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        return {int: "int", float: "float", bool: "bool"}.get(ann, "str")
    t = getattr(p, "type", None)
    if isinstance(t, click.types.BoolParamType):
        return "bool"
    if isinstance(t, click.types.IntParamType):
        return "int"
    if isinstance(t, click.types.FloatParamType):
        return "float"
    return "str"


def to_param(p) -> Param:
    t = getattr(p, "type", None)
    low = getattr(p, "min", None) if hasattr(p, "min") else getattr(t, "min", None)
    high = getattr(p, "max", None) if hasattr(p, "max") else getattr(t, "max", None)
    return Param(p.name, tuple(p.opts), tuple(p.secondary_opts), "Argument" in type(p).__name__, _kind(p), low, high,
                 bool(p.required), p.nargs, bool(getattr(p, "is_flag", False)))


# --- numbers as text ---------------------------------------------------------------------------------------

NUM_HOSTILE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "+inf", "1e309", "-1e309", "1e18", "1e308",
               str(2**70), str(2**63), str(-(2**63) - 1), "-1", "0", "-0", "0.0", "1e-320", "0.5", "2.7", "1_000",
               "0x10", "1e3", "", " ", "abc", "[/red]", DIGITS_5000, "-" + DIGITS_5000, "1" + "0" * 400,
               "\u0661\u0662", " 7 ", "1e1000"]
POSITIVE = {"steps", "batch_size", "seq_len", "grad_accum", "eval_every", "ckpt_every", "keep_last", "gpus", "batch",
            "prompt", "gen", "fine_grained", "repeats", "lr", "capacity_factor", "mfu", "train_tokens"}
NON_NEGATIVE = {"shared", "zero", "skew"}


def number_bad(text: str, param) -> str | None:
    """Why `text` is an invalid value for the numeric option `param` (None: it may be valid)."""
    name = param.name
    flag = param.opts[0] if param.opts else name
    is_int = param.kind == "int"
    try:
        value = int(text) if is_int else float(text)
    except (ValueError, OverflowError):
        return f"{flag} {text[:20]!r} is not {'an integer' if is_int else 'a number'}"
    if not is_int and not math.isfinite(value):
        return f"{flag} {text!r} is not finite"
    low, high = param.low, param.high
    if low is not None and value < low:
        return f"{flag} below its declared minimum"
    if high is not None and value > high:
        return f"{flag} above its declared maximum"
    if name in POSITIVE and value <= 0:
        return f"{flag} not positive"
    if name in NON_NEGATIVE and value < 0:
        return f"{flag} negative"
    if abs(value) >= 2**63:
        return f"{flag} beyond any bound (2**63)"
    return None


@st.composite
def number_text(draw, param, hostile: bool) -> str:
    """A value for a numeric option: hostile text, or a valid one (small, or at the edges of its range)."""
    if hostile:
        return draw(st.sampled_from(NUM_HOSTILE))
    low, high = param.low, param.high
    if param.kind == "int":
        lo = int(low) if low is not None else 1
        edges = [lo, lo + 1] + ([int(high), int(high) - 1, int((lo + high) // 2)] if high is not None else [10**6])
        return draw(st.one_of(st.integers(lo, lo + 64).map(str), st.sampled_from(edges).map(str)))
    lo = max(low or 0.0, 1e-3)
    hi = min(high if high is not None else 10.0, 10.0)
    edges = [low if low is not None and low > 0 else 1e-6] + ([high] if high is not None else [1e6])
    return draw(st.one_of(st.floats(lo, hi, allow_nan=False).map(repr), st.sampled_from(edges).map(repr)))


# --- file references ---------------------------------------------------------------------------------------

SPECIAL_READS = [("/dev/zero", "a device"), ("/nonexistent/moelab/file.json", "a missing file"),
                 ("/proc/self/status", "not a model/hardware/workload file"), ("/", "a directory"),
                 (".", "a directory"), ("/etc/hostname", "not a model/hardware/workload file")]
FILE_NAMES = ["m.json", "[red]m.json", "caf\u00e9 model.json", "x/config.json", "[red]x/config.json",
              "[b]x[/b]/config.json"]


@st.composite
def special_part(draw, what: str) -> Part:
    kind = draw(st.sampled_from(["path", "path", "fifo", "dir", "dir_named_config", "missing"]))
    if kind == "path":
        path, why = draw(st.sampled_from(SPECIAL_READS))
        return Part([path], invalid=[f"{what}: {why}"])
    if kind == "fifo":
        name = draw(st.sampled_from(["f.json", "f.yaml", "[red]f.json", "fifo/config.json"]))
        return Part([name.removesuffix("/config.json")], {name: FIFO}, [f"{what}: a FIFO"])
    if kind == "dir":
        return Part(["d.json"], {"d.json": DIR}, [f"{what}: a directory"])
    if kind == "dir_named_config":
        return Part(["c"], {"c/config.json": DIR}, [f"{what}: config.json is a directory"])
    return Part(["missing.yaml"], invalid=[f"{what}: a missing file"])


@cache
def tiny_spec_dict() -> dict:
    from moelab.spec.model import spec_to_dict
    from moelab.train.presets import tiny_dense

    return spec_to_dict(tiny_dense())


ESCAPES = ["../../escaped", "{CASE}/escaped", "../escaped", "a/../../../escaped", "..", ".", "", "[/red]", "x" * 300]


@st.composite
def spec_json_part(draw, hostile: bool) -> Part:
    """A moelab spec JSON (as checkpoints write it) for train/bench, its name sometimes a path escape."""
    spec = json.loads(json.dumps(tiny_spec_dict()))
    invalid = []
    if draw(st.booleans()):
        spec["name"] = draw(st.sampled_from(ESCAPES))
    for _ in range(draw(st.integers(1, 2)) if hostile else 0):
        key = draw(st.sampled_from(["d_model", "n_layers", "vocab_size", "max_position", "norm_eps", "ffn_dim"]))
        value = draw(st.sampled_from([0, -4, 2**70, "x", None, 1e30]))
        spec[key] = value
        invalid.append(f"spec JSON {key}: {value!r}")
    if hostile and draw(st.booleans()):
        spec["moe"] = {"n_experts": 4, "top_k": 9}
        invalid.append("spec JSON: top_k above the experts")
    name = draw(st.sampled_from(["spec.json", "[red]spec.json"]))
    return Part([name], {name: Doc(to_json(spec).encode())}, invalid, positions=spec.get("max_position")
                if isinstance(spec.get("max_position"), int) else None)


@st.composite
def model_part(draw, use: str, hostile: bool) -> Part:
    """A model reference for `use` in serve (estimate/compare), train, bench."""
    kinds = ["file", "file", "file", "junk", "special"] if hostile else ["preset", "preset", "file"]
    kind = draw(st.sampled_from(kinds + (["spec"] if use != "serve" else [])))
    if kind == "preset":
        names = list(MODEL_PRESETS) if use == "serve" else list(TRAIN_PRESETS) + (
            ["mixtral-8x7b", "llama-3-70b"] if use == "bench" else [])
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 5)) == 0 and use == "serve":
            name = name.upper()
        return Part([name], positions=1024 if name in TRAIN_PRESETS else None)
    if kind == "file":
        doc = draw(config_docs(small=use != "serve", hostile=hostile))
        name = draw(st.sampled_from(FILE_NAMES))
        token = name.removesuffix("/config.json") if draw(st.booleans()) else name
        return Part([token], {name: doc}, list(doc.invalid))
    if kind == "junk":
        name = draw(st.sampled_from(["", "nope", *MARKUP[:3], "../../etc/passwd", "-", "mixtral", "tiny"]))
        return Part([name], invalid=[f"model {name!r} unknown"])
    if kind == "spec":
        return draw(spec_json_part(hostile))
    return draw(special_part("model"))


@st.composite
def hardware_part(draw, hostile: bool) -> Part:
    kind = draw(st.sampled_from(["file", "file", "file", "junk", "special"] if hostile else ["preset", "file"]))
    if kind == "preset":
        return Part([draw(st.sampled_from(["H100-SXM", "h200", "A100-40GB", "MI300X", "rtx-4090", "L40S"]))])
    if kind == "file":
        doc, suffix = draw(hardware_docs(hostile=hostile))
        name = draw(st.sampled_from(["hw", "[red]hw", "h/gpu"])) + suffix
        return Part([name], {name: doc}, list(doc.invalid))
    if kind == "junk":
        name = draw(st.sampled_from(["", "H100", "nope", "[/red]", "h100-sxm "]))
        return Part([name], invalid=[f"hardware {name!r} unknown"])
    return draw(special_part("hardware"))


@st.composite
def workload_part(draw, hostile: bool, small: bool = True) -> Part:
    if hostile and draw(st.integers(0, 4)) == 0:
        return draw(special_part("workload"))
    plan = draw(workload_docs(small=small, hostile=hostile))
    folder = draw(st.sampled_from(["", "w/", "[/red]/"]))
    name = folder + draw(st.sampled_from(["wl.yaml", "wl.yml", "wl.json", "wl"]))
    files = {name: plan.doc, **{folder + k: v for k, v in plan.side_files.items()}}
    return Part([name], files, list(plan.doc.invalid))


DATA_BAD = [
    ("missing-corpus", None, "a missing corpus"), ("/dev/zero", None, "a device"),
    ("corpus.txt", Doc(b""), "an empty corpus"), ("corpus.jsonl", Doc(b"\xff\x00\xfe" * 50), "a binary corpus"),
    ("corpus.jsonl", Doc(b'{"text": NaN}\n{"text": 1}\n'), "a corpus of no text"), ("corpus", DIR, "an empty folder"),
    ("corpus.txt", FIFO, "a FIFO"), ("corpus/code", DIR, "a domain folder without text"),
]


@st.composite
def data_part(draw) -> Part:
    path, doc, why = draw(st.sampled_from(DATA_BAD))
    token = path.split("/")[0]
    return Part([token], {path: doc} if doc is not None else {}, [f"--data: {why}"])


@st.composite
def out_part(draw, command: str, hostile: bool) -> Part:
    kind = draw(st.sampled_from(["here", "existing_file", "under_file", "existing_dir"] if hostile
                                else ["fresh", "fresh", "markup"]))
    if kind == "fresh":
        return Part(["out/run" if command != "calibrate" else "out/hw.json"])
    if kind == "markup":
        return Part(["[/red]out" + (".yaml" if command == "calibrate" else "")])
    if kind == "here":
        return Part(["."], invalid=["--out . is a directory"] if command == "calibrate" else [])
    if kind == "existing_file":
        files = {"taken": Doc(b"x")}
        return Part(["taken"], files, [] if command == "calibrate" else ["--out is an existing file"])
    if kind == "under_file":
        return Part(["taken/out"], {"taken": Doc(b"x")}, ["--out is under a file"])
    return Part(["outdir"], {"outdir": DIR}, ["--out is a directory"] if command == "calibrate" else [])


@st.composite
def manifest_part(draw, hostile: bool, holdout: bool = False) -> Part:
    """A `moelab fit` manifest and its result files (fuzz_inputs.manifest_docs); a holdout's live under h/."""
    if hostile and draw(st.integers(0, 5)) == 0:
        return draw(special_part("holdout manifest" if holdout else "manifest"))
    stem = "h/hold" if holdout else draw(st.sampled_from(MANIFEST_NAMES))
    folder = stem.rsplit("/", 1)[0] + "/" if "/" in stem else ""
    doc, files, suffix = draw(manifest_docs(folder, "h" if holdout else "", hostile))
    return Part([stem + suffix], {stem + suffix: doc, **files}, list(doc.invalid))


# --out of fit and --plot of frontier: (path, files the case creates, why it is invalid or None). Never a device:
# moelab runs as root in places, and an atomic write replaces whatever node the path names.
TOO_LONG = "x" * 300
FIT_OUTS = [("fitted.yaml", {}, None), ("o/fitted.json", {"o": DIR}, None), ("[red]fit.yaml", {}, None),
            ("caf\u00e9.yml", {}, None), ("old.yaml", {"old.yaml": Doc(b"x")}, None)]
FIT_OUTS_BAD = [(".", {}, "--out . is a folder"), ("outdir", {"outdir": DIR}, "--out a folder"),
                ("nodir/fitted.yaml", {}, "--out in a missing folder"),
                ("taken/fitted.yaml", {"taken": Doc(b"x")}, "--out under a file"),
                (TOO_LONG + ".yaml", {}, "--out a name too long"), ("", {}, "--out empty"),
                ("fifo.yaml", {"fifo.yaml": FIFO}, None)]
PLOTS = [("f.png", {}, None), ("plots/f.png", {"plots": DIR}, None), ("[red]f.png", {}, None),
         ("caf\u00e9 plot", {}, None), ("old.png", {"old.png": Doc(b"x")}, None)]
PLOTS_BAD = [(".", {}, "--plot . is a folder"), ("pdir", {"pdir": DIR}, "--plot a folder"),
             ("nodir/f.png", {}, "--plot in a missing folder"),
             ("taken/f.png", {"taken": Doc(b"x")}, "--plot under a file"),
             (TOO_LONG + ".png", {}, "--plot a name too long"), ("ff.png", {"ff.png": FIFO}, None),
             ("/dev/full", {}, "--plot a full device"), ("", {}, None)]


def path_part(valid: list, bad: list, hostile: bool):
    return st.sampled_from(bad if hostile else valid).map(
        lambda c: Part([c[0]], dict(c[1]), [c[2]] if c[2] else []))


@st.composite
def frontier_models(draw, hostile: bool) -> Part:
    """One or two models for `moelab frontier` (files apart), sometimes one named twice."""
    parts: list[Part] = []
    for _ in range(draw(st.integers(1, 2))):
        p = draw(model_part("serve", hostile and draw(st.booleans())))
        if not any(set(p.files) & set(q.files) for q in parts):
            parts.append(p)
    if hostile and draw(st.integers(0, 3)) == 0:
        parts.append(Part(list(parts[0].tokens)))
    tokens = [t for p in parts for t in p.tokens]
    invalid = [w for p in parts for w in p.invalid] + (["frontier: a model named twice"]
                                                       if len(set(tokens)) < len(tokens) else [])
    return Part(tokens, {k: v for p in parts for k, v in p.files.items()}, invalid)


# --- option values by meaning ------------------------------------------------------------------------------

def choice(valid: list[str], bad: list[str], lenient: tuple[str, ...] = (), hostile: bool = True):
    """A string option: one of `valid`, or (when `hostile`) a bad string (invalid unless in `lenient`)."""
    if not hostile:
        return st.sampled_from(valid).map(lambda v: Part([v]))
    return st.sampled_from(bad).map(lambda v: Part([v], invalid=[] if v in lenient else [f"value {v!r} not accepted"]))


JUNK = ["", "[/red]", "nan", "x" * 500, "caf\u00e9", "-"]
BATCHES_BAD = ["", ",", "0", "-1", "a,b", "nan", "inf", "1.5", DIGITS_5000, str(2**70), "1e3", "[/red]", "1,0"]
AS_MOE_BAD = ["8x9", "0x0", "8x0", "x", "8x", "1e18x2", "nanxnan", "65537x2", f"{2**70}x2", "[/red]", "-8x2", "8x2x1"]
SIZES_BAD = ["nan", "inf", "-1", "0", "1e30", "abc", "[/red]", "50Q", "1e-3", DIGITS_5000]


def string_option(command: str, name: str, hostile: bool):
    if name == "dtype":
        valid = ["fp32", "bf16", "fp16"] if command == "bench" else ["bf16", "fp8", "int4", "fp32", "int8"]
        return choice(valid, ["fp64", "BF16", "int3", *JUNK], ("BF16",), hostile)
    if name == "kv_dtype":
        return choice(["bf16", "fp8", "fp16", "fp32"], ["x", "int4", "[/red]", "", "FP8"], ("", "int4", "FP8"), hostile)
    if name == "device":
        return choice(["cpu"], ["gpu", "CPU", "cuda:9", "mps", *JUNK], ("CPU",), hostile)
    if name == "balancing":
        return choice(["none", "aux", "aux-free"], ["AUX", "auxfree", *JUNK], ("AUX",), hostile)
    if name == "batches":
        return choice(["1,8,32", "1", "4,2", " 1, 2 ", "1,,2"], BATCHES_BAD, (), hostile)
    if name == "as_moe":
        return choice(["8x2", "4x1", "16x4"], AS_MOE_BAD, (), hostile)
    if name == "shrink_to":
        return choice(["2M", "5M", "1000000"], SIZES_BAD, (), hostile)
    if name == "loss":
        return choice(["squared", "soft_l1"], ["huber", "", "SQUARED", "soft-l1", "[/red]"], (), hostile)
    if name == "params":  # moelab.cost.fit.PARAMETERS; "moe_gemm_efficiency" changes no dense prediction
        return choice(["bandwidth_efficiency,step_overhead_us", "gemm_efficiency.bf16", "step_overhead_us",
                       " bandwidth_efficiency , kernel_launch_us ", "bandwidth_efficiency,,step_overhead_us"],
                      ["", ",", " , ", "speed", "[/red]", "x" * 500, "moe_block_rows", "moe_gemm_efficiency",
                       "bandwidth_efficiency,bandwidth_efficiency", "gemm_efficiency.fp64"],
                      ("moe_gemm_efficiency", "bandwidth_efficiency,bandwidth_efficiency", "gemm_efficiency.fp64"),
                      hostile)
    return choice(["x"], JUNK, tuple(JUNK), hostile)


@st.composite
def option_part(draw, command: str, param, hostile: bool) -> Part:
    """The tokens of one option of `command` (flag and value); a bad value when `hostile`."""
    flag = param.opts[0]
    if param.is_flag or param.kind == "bool":
        if param.secondary_opts and draw(st.booleans()):
            return Part([param.secondary_opts[0]])
        if hostile and draw(st.integers(0, 3)) == 0:
            return Part([f"{flag}=maybe"], invalid=[f"{flag} takes no value"])
        return Part([flag])
    name = param.name
    if name in ("model",):
        value = draw(model_part("train" if command in ("train", "train-compare") else "serve", hostile))
    elif name == "hardware":
        value = draw(hardware_part(hostile))
    elif name == "workload":
        value = draw(workload_part(hostile))
    elif name == "data":
        value = draw(data_part()) if hostile else Part([])
    elif name == "out" and command == "fit":
        value = draw(path_part(FIT_OUTS, FIT_OUTS_BAD, hostile))
    elif name == "out":
        value = draw(out_part(command, hostile))
    elif name == "plot":
        value = draw(path_part(PLOTS, PLOTS_BAD, hostile))
    elif name == "holdout":
        value = draw(manifest_part(hostile, holdout=True))
    elif param.kind in ("int", "float"):
        text = draw(number_text(param, hostile))
        bad = number_bad(text, param)
        value = Part([text], invalid=[bad] if bad else [])
    else:
        value = draw(string_option(command, name, hostile))
    flag = draw(st.sampled_from(param.opts))
    if not value.tokens:
        return Part([])
    if flag.startswith("--") and draw(st.integers(0, 6)) == 0 and value.tokens[0][:1] != "-":
        return Part([f"{flag}={value.tokens[0]}"], value.files, value.invalid, value.positions)
    return Part([flag, *value.tokens], value.files, value.invalid, value.positions)


EXTRAS = [(["--no-such-flag"], "unknown option"), (["--[/red]"], "unknown option"), (["-Z"], "unknown option"),
          (["--json=[/red]"], "--json takes no value"), (["extra-arg"], "an extra argument"),
          (["--jsn"], "unknown option")]


# --- whole cases -------------------------------------------------------------------------------------------

def command_params(command: str) -> list:
    import typer

    from moelab.cli import app

    return [to_param(p) for p in typer.main.get_command(app).commands[command].params]


def positional_part(command: str, param, draw, hostile: bool) -> Part:
    if command == "schema":
        return draw(choice(["workload", "hardware"], ["", "config", "[/red]", "WORKLOAD", "workloads"],
                           ("WORKLOAD",), hostile))
    if command == "runs":
        ids = draw(st.lists(st.sampled_from([str(2**70), str(2**63), "0", "abc", "1.5", "nan", DIGITS_5000, "-1"])
                            if hostile else st.integers(1, 3).map(str), max_size=3))
        bad = [i for i in ids if not i.lstrip("-").isdigit() or i.startswith("-") or len(i) > 4000]
        return Part(ids, invalid=[f"run id {b[:20]!r}" for b in bad])
    if command == "train-compare":
        parts = [draw(model_part("train", hostile and draw(st.booleans()))) for _ in range(draw(st.integers(
            0 if hostile else 2, 3)))]
        invalid = [w for p in parts for w in p.invalid] + (["train-compare needs two models"] if len(parts) < 2 else [])
        return Part([t for p in parts for t in p.tokens], {k: v for p in parts for k, v in p.files.items()}, invalid)
    if command == "fit":
        return draw(manifest_part(hostile))
    if command == "frontier":
        return draw(frontier_models(hostile))
    use = "bench" if command == "bench" else "serve"
    if not param.required and draw(st.booleans()):
        return Part([])
    return draw(model_part(use, hostile))


def killers(command: str, params: dict, positions: int | None) -> list[Part]:
    """Arguments validation must refuse before any work, for a long command (only its own options)."""
    out = [Part(tokens, invalid=[why]) for tokens, why in EXTRAS[:3]]

    def opt(name, value, why, files=None):
        if name in params:
            out.append(Part([params[name].opts[0], value], files or {}, [why]))

    for name, value, why in [
        ("steps", "0", "--steps 0"), ("lr", "nan", "--lr nan"), ("lr", "-1", "--lr -1"),
        ("seed", str(2**70), "--seed 2**70"), ("capacity_factor", "nan", "--capacity-factor nan"),
        ("capacity_factor", "inf", "--capacity-factor inf"), ("capacity_factor", "-1", "--capacity-factor -1"),
        ("balancing", "[/red]", "--balancing [/red]"), ("batch_size", "0", "--batch-size 0"),
        ("grad_accum", "-1", "--grad-accum -1"), ("keep_last", "0", "--keep-last 0"),
        ("target_loss", "nan", "--target-loss nan"), ("repeats", "0", "--repeats 0"), ("prompt", "0", "--prompt 0"),
        ("gen", "-1", "--gen -1"), ("batches", "0", "--batches 0"), ("dtype", "fp64", "--dtype fp64"),
        ("device", "gpu", "--device gpu"), ("shrink_to", "nan", "--shrink-to nan"),
        ("hardware", "/dev/zero", "--hardware /dev/zero"), ("hardware", "nope", "--hardware nope"),
        ("workload", "/dev/zero", "--workload /dev/zero"), ("workload", "missing.yaml", "--workload missing"),
        ("seq_len", "0", "--seq-len 0"), ("eval_every", str(2**70), "--eval-every 2**70"),
    ]:
        opt(name, value, why)
    if "prompt" in params and command == "bench" and positions:
        opt("prompt", "100000", f"--prompt 100000 beyond the model's {positions} positions")
    if "resume" in params:
        out.append(Part(["--resume"], invalid=["--resume without a checkpoint"]))
    if "data" in params:
        opt("data", "missing-corpus", "--data missing")
    if "out" in params and command != "calibrate":
        opt("out", "taken", "--out an existing file", {"taken": Doc(b"x")})
    if "out" in params and command == "calibrate":
        opt("out", "outdir", "--out a directory", {"outdir": DIR})
    if "workload" in params:
        bad = (b"hardware: gpu.yaml\ngpus: 8\nlatency_p99_ms: 50\nbatch: 8\nprompt: 64\ngen: 16\n"
               b"task_mix: {code: 1}\ntraining: scratch\ncandidates: [mistral-7b]\n")
        hw = b"peak_tflops: {bf16: 312}\nmemory_gb: 80\nmemory_bandwidth_gbps: 2000\nintra_node_gbps: 0\n" \
             b"tdp_watts: 700\nusd_per_hour: 2\n"
        opt("workload", "wk.yaml", "a workload whose hardware has intra_node_gbps 0",
            {"wk.yaml": Doc(bad), "gpu.yaml": Doc(hw)})
    return out


@st.composite
def cases(draw, command: str) -> Case:
    """A case for `command`: positionals, a random subset of its options, sometimes junk, and for a long
    command a killer when nothing else is known-invalid."""
    params = command_params(command)
    options = {p.name: p for p in params if not p.positional}
    arguments = [p for p in params if p.positional]
    parts: list[Part] = []
    invalid: list[str] = []
    rate = draw(st.sampled_from([0, 0, 10, 25, 50]))  # percent of ingredients that are hostile

    def hostile() -> bool:
        return draw(st.integers(0, 99)) < rate

    for arg in arguments:
        if arg.required and hostile() and draw(st.integers(0, 5)) == 0:
            invalid.append(f"missing argument {arg.name}")
            continue
        parts.append(positional_part(command, arg, draw, hostile()))
    chosen = [o for o in options.values() if o.name != "as_json" and (
        o.required and not (hostile() and draw(st.integers(0, 5)) == 0)
        or draw(st.integers(0, 1 if o.name in OFTEN else 3)) == 0)]
    names = {o.name for o in chosen}
    if "shared" in names and "fine_grained" not in names and not hostile():
        chosen = [o for o in chosen if o.name != "shared"]  # --shared alone is refused: keep most cases valid
    if "as_moe" in names and "fine_grained" in names and not hostile():
        chosen = [o for o in chosen if o.name != "fine_grained"]
    for o in options.values():
        if o.required and o not in chosen:
            invalid.append(f"missing option {o.opts[0]}")
    for o in chosen:
        parts.append(draw(option_part(command, o, hostile())))
    json_out = "as_json" in options and draw(st.integers(0, 3)) != 0
    files: dict[str, Doc] = {}
    for p in parts:
        files.update(p.files)
        invalid.extend(p.invalid)
    positions = next((p.positions for p in parts if p.positions), None)
    tail: list[str] = []
    if hostile() and draw(st.integers(0, 3)) == 0:
        tokens, why = draw(st.sampled_from(EXTRAS))
        if not (tokens == ["extra-arg"] and command in ("train-compare", "runs", "frontier")):
            tail += tokens
            invalid.append(why)
    if command == "bench" and positions and "prompt" in options:
        prompt = _last_value(parts, options["prompt"]) or 128
        gen = _last_value(parts, options.get("gen")) or 32
        if prompt + gen > positions:
            invalid.append(f"prompt + gen {prompt + gen} beyond the model's {positions} positions")
    store = draw(st.sampled_from(["absent", "rows", "garbage", "empty", "directory", "corrupt-row"])) \
        if command in ("runs", "train", "train-compare") else "absent"
    calibration = draw(st.sampled_from(["absent", "absent", "valid", "valid", "corrupt", "directory"])) \
        if command in ("bench", "calibrate") else "absent"
    may_reach_work = False
    if command in LONG and not invalid:
        if command == "calibrate" and calibration == "valid" and "refresh" not in [o.name for o in chosen]:
            may_reach_work = True  # the cached calibration is read: finishes at once
        elif command == "train-compare" and any("spec.json" in k for k in files) and draw(st.booleans()):
            may_reach_work = True  # stopped where training would begin: shows where run folders go
        else:
            killer = draw(st.sampled_from(killers(command, options, positions)))
            parts.append(killer)
            files.update(killer.files)
            invalid.extend(killer.invalid)
    if command == "calibrate" and calibration in ("corrupt", "directory") and not invalid:
        may_reach_work = True  # healing a broken cache is a fresh calibration: stopped where it begins
    argv = [command] + [t for p in parts for t in p.tokens] + (["--json"] if json_out else []) + tail
    writes = [_last_value(parts, options["out"], text=True) or DEFAULT_OUT.get(command, "")] if "out" in options \
        else []
    if "plot" in options:
        writes.append(_last_value(parts, options["plot"], text=True) or "")
    return Case(command, argv, files, invalid, json_out or command == "schema", [w for w in writes if w],
                store, calibration, may_reach_work)


def _last_value(parts: list[Part], param, text: bool = False):
    """The value the last occurrence of option `param` gives, as click would read it (None: absent/bad)."""
    if param is None:
        return None
    found = None
    for p in parts:
        toks = p.tokens
        for i, t in enumerate(toks):
            if t in param.opts and i + 1 < len(toks):
                found = toks[i + 1]
            elif any(t.startswith(o + "=") for o in param.opts if o.startswith("--")):
                found = t.split("=", 1)[1]
    if found is None or text:
        return found
    try:
        return int(found)
    except ValueError:
        return None


def fit_cases():
    """fit's cases; the engine's figures of the result files computed first, outside any draw (the engine may use
    `random`, which Hypothesis refuses inside a strategy)."""
    for setting in VLLM_SETTINGS:
        vllm_figures(*setting)
    return cases("fit")


REGISTRY = {name: (lambda name=name: cases(name)) for name in (
    "estimate", "compare", "models", "hardware", "decide", "calibrate", "bench", "train", "train-compare", "runs",
    "study", "schema", "frontier", "export", "serve-bench", "prune", "quantize", "upcycle", "upcycle-compare",
    "probe", "hybrid", "sweep", "fit-laws", "claims")} | {
    "fit": fit_cases}
