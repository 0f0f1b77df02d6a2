"""Upcycling: a trained dense run (or a dense HF folder) becomes a MoE run, its FFN weights moved into experts.

The spec change is moelab.spec.transform.upcycle_spec (copy / split / granular: the modes, their routers and
scaling are documented there); this module moves the weights, state dict to state dict:

- every tensor outside the FFNs (embeddings, attention, norms, lm_head) is copied unchanged;
- copy: expert e's gate_up_proj[e] = [gate_proj; up_proj] and down_proj[e] = down_proj of the dense FFN;
- split: expert e takes hidden units [e*f/E, (e+1)*f/E): rows of gate_proj and up_proj, columns of down_proj, so
  that the E experts' outputs sum to the dense FFN's (its hidden units are independent until down_proj sums them);
- granular: the same cut into E*M slices; the first S slices are the shared experts (one SwiGLU of width S*f/(E*M),
  their hidden units in order), slices S.. the routed experts in order.

The router is new: weight ~ Normal(0, ROUTER_STD) (seeded), as Sparse Upcycling initialises it from scratch
(Komatsuzaki et al. 2022, arXiv 2212.05055: every parameter copied except the router, which the dense model does
not have). 0.02 is moelab's (and Mixtral's HF initializer_range) router init: small, so the first steps route
nearly uniformly and every expert receives gradient; in copy mode its values cannot change the output at init
(identical experts, weights summing to 1), only which copies learn from which tokens, which is what breaks their
symmetry. `router_std=0` gives a uniform router (split and granular then weigh every kept expert equally).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.errors import MoelabError
from moelab.mitigate import quality
from moelab.mitigate.runs import SourceRun, check_out, lineage_entry, read_run, write_run
from moelab.spec.model import ModelSpec
from moelab.spec.transform import upcycle_spec

ROUTER_STD = 0.02


@dataclass(frozen=True)
class _HFSource(SourceRun):
    """A dense HF folder read as a source: no moelab config (no corpus), its own tokenizer.json if any."""

    def tokenizer_json(self) -> str | None:
        own = self.folder / "tokenizer.json"
        return own.read_text() if own.is_file() else None


def read_source(ref: str | Path) -> SourceRun:
    """The source `ref` names, its weights not yet read: a moelab run, else a dense HF folder (config.json +
    safetensors, read by moelab.nn.hf.load_pretrained). A quantized run is refused (its experts are not float
    weights)."""
    path = Path(ref)
    is_run = any((p / "meta.json").is_file() for p in (path, path / "final"))
    if path.is_dir() and (path / "config.json").is_file() and not is_run:
        from moelab.spec.hf import spec_from_config
        from moelab.userfile import load_user_file

        spec = spec_from_config(load_user_file(path / "config.json", "HF config"), name=path.resolve().name)
        return _HFSource(folder=path, spec=spec, meta={"config": {}, "lineage": [
            {"transform": "hf", "from": str(path.resolve()), "from_model": spec.name}]})
    source = read_run(ref)
    if source.quantization:
        raise MoelabError(f"RUN {ref}: is quantized ({source.quantized}); upcycle a float run")
    return source


def load_source(source: SourceRun):
    """The source's float32 model in eval mode."""
    if isinstance(source, _HFSource):
        from moelab.nn.hf import load_pretrained

        return load_pretrained(source.folder).eval()
    return source.load_model()


def upcycle_state(dense: dict[str, torch.Tensor], dense_spec: ModelSpec, moe_spec: ModelSpec,
                  router: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The MoE model's state dict from the dense one's: see the module docstring. `router[i]` is layer i's router
    weight (E, d)."""
    out = {k: v for k, v in dense.items() if ".mlp." not in k}
    for i, (dense_layer, layer) in enumerate(zip(dense_spec.layers, moe_spec.layers, strict=True)):
        moe, f = layer.moe, dense_layer.ffn.width
        prefix = f"layers.{i}.mlp."
        gate_FD, up_FD, down_DF = (dense[prefix + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        w = moe.expert_ffn
        if w == f:  # copy: every expert the whole FFN
            idx = [torch.arange(f)] * moe.n_experts
        else:  # split / granular: slice j holds hidden units [j*w, (j+1)*w); the first n_shared are shared
            idx = [torch.arange(j * w, (j + 1) * w) for j in range(moe.n_shared, moe.n_shared + moe.n_experts)]
        out[prefix + "gate_up_proj"] = torch.stack([torch.cat([gate_FD[j], up_FD[j]]) for j in idx]).contiguous()
        out[prefix + "down_proj"] = torch.stack([down_DF[:, j] for j in idx]).contiguous()
        out[prefix + "gate.weight"] = router[i]
        out[prefix + "gate.bias"] = torch.zeros(moe.n_experts, dtype=torch.float32)
        if moe.n_shared:
            units = torch.arange(moe.n_shared * moe.shared_ffn)
            out[prefix + "shared_experts.gate_proj.weight"] = gate_FD[units].contiguous()
            out[prefix + "shared_experts.up_proj.weight"] = up_FD[units].contiguous()
            out[prefix + "shared_experts.down_proj.weight"] = down_DF[:, units].contiguous()
    return out


def upcycle_model(dense_model, n_experts: int, top_k: int, mode: str = "copy", granularity: int = 1,
                  shared: int = 0, router_std: float = ROUTER_STD, seed: int = 0):
    """The upcycled TransformerLM (eval mode, the dense model's dtype) of a dense moelab.nn model."""
    from moelab.nn.model import build_model

    dense_spec = dense_model.spec
    spec = upcycle_spec(dense_spec, n_experts, top_k, mode, granularity, shared)
    state = {k: v.detach() for k, v in dense_model.state_dict().items()}
    dtype = state["embed_tokens.weight"].dtype
    generator = torch.Generator().manual_seed(seed)
    router = {i: (torch.randn(layer.moe.n_experts, spec.d_model, generator=generator, dtype=torch.float64)
                  * router_std).to(dtype) for i, layer in enumerate(spec.layers)}
    model = build_model(spec).to(dtype)
    model.load_state_dict(upcycle_state(state, dense_spec, spec, router), strict=True)
    return model.eval()


def upcycle(ref: str | Path, n_experts: int, top_k: int, out: str | Path, mode: str = "copy", granularity: int = 1,
            shared: int = 0, router_std: float = ROUTER_STD, seed: int = 0, eval_tokens: int | None = None) -> dict:
    """Upcycle the dense run (or HF folder) `ref` into the run folder `out`; the summary (also out/summary.json):
    spec, parameter counts before and after, and, for a moelab run, validation loss per domain before and after
    (and their delta; rare domains named) on the run's own corpus."""
    from moelab.cost.params import count_params

    began = time.perf_counter()
    if not Path(ref).exists():
        raise MoelabError(f"RUN {ref}: no such run folder")
    source = read_source(ref)
    if isinstance(router_std, bool) or not isinstance(router_std, int | float) or not 0 <= router_std <= 1:
        raise MoelabError(f"the router std must be in [0, 1], got {router_std!r}")
    spec = upcycle_spec(source.spec, n_experts, top_k, mode, granularity, shared)  # every refusal before work
    tokens = quality.eval_tokens(source, eval_tokens or None) if source.config else None  # its config checked
    out_path = check_out(out, source.folder)
    dense_model = load_source(source)
    model = upcycle_model(dense_model, n_experts, top_k, mode, granularity, shared, router_std, seed)
    before, after = count_params(source.spec), count_params(spec)
    summary = {"source_model": source.spec.name, "mode": mode, "experts": n_experts, "top_k": top_k,
               "granularity": granularity, "shared": shared, "router": spec.moe.router,
               "routed_scaling_factor": spec.moe.routed_scaling_factor, "router_std": router_std, "seed": seed,
               "params_total": {"before": before.total, "after": after.total},
               "params_active": {"before": before.active, "after": after.active}}
    if source.config:  # a moelab run: its corpus is known
        corpus = quality.run_corpus(source)
        length = quality.seq_len(source)
        loss_before = quality.domain_loss(dense_model, corpus, length, tokens)
        loss_after = quality.domain_loss(model, corpus, length, tokens)
        summary.update(loss_before=loss_before, loss_after=loss_after,
                       loss_delta=quality.loss_delta(loss_before, loss_after),
                       rare_domains=quality.rare_domains(corpus), eval_tokens_per_domain=tokens)
    summary["seconds"] = round(time.perf_counter() - began, 3)
    entry = lineage_entry("upcycle", source, mode=mode, experts=n_experts, top_k=top_k, granularity=granularity,
                          shared=shared, router_std=router_std, seed=seed)
    final = write_run(out_path, model, spec, source, entry, summary=summary)
    return {"model": spec.name, "out": str(out_path), "final": str(final), **summary}
