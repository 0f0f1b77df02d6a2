"""Parameter counts, total and active, broken down by component, summed layer by layer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

from moelab.spec.model import AttentionSpec, FFNSpec, LinearAttentionSpec, ModelSpec, MoESpec


def linear_attention_params(d: int, lin: LinearAttentionSpec) -> int:
    """Gated DeltaNet (Qwen3-Next): in_proj_qkvz d -> 2K + 2V, in_proj_ba d -> 2 n_v, a depthwise conv over
    q, k, v (2K + V channels, no bias), dt_bias and A_log per value head, a gated RMSNorm of v_head_dim and
    out_proj V -> d (K = n_k * k_head_dim, V = n_v * v_head_dim). Source: transformers qwen3_next."""
    k, v = lin.n_k_heads * lin.k_head_dim, lin.n_v_heads * lin.v_head_dim
    return d * (2 * k + 2 * v) + d * 2 * lin.n_v_heads + (2 * k + v) * lin.conv_kernel + 2 * lin.n_v_heads \
        + lin.v_head_dim + v * d


def attention_params(d: int, a: AttentionSpec) -> int:
    """Parameters of one attention block (projections, biases, q/k norms, sinks; MLA's low-rank path)."""
    if a.kind == "linear":
        return linear_attention_params(d, a.linear)
    if a.kind == "mla":
        qk = a.qk_head_dim
        if a.q_lora_rank is None:
            q = d * a.n_heads * qk
        else:
            q = d * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * a.n_heads * qk
            q += a.q_lora_rank if a.qkv_bias else 0
        kv_a = d * (a.kv_lora_rank + a.qk_rope_head_dim) + (a.kv_lora_rank + a.qk_rope_head_dim) * a.qkv_bias
        kv = kv_a + a.kv_lora_rank + a.kv_lora_rank * a.n_heads * (a.qk_nope_head_dim + a.v_head_dim)
        o = a.n_heads * a.v_head_dim * d + d * a.o_bias
        return q + kv + o
    q_out, kv_out = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
    if a.moa_experts:  # JetMoE MoA: kv_proj, each expert's q_proj and o_proj (n_kv_heads heads) and router row
        return d * 2 * kv_out + a.moa_experts * (moa_expert_params(d, a) + d) + d * a.o_bias
    q_proj = q_out * (2 if a.output_gate else 1)  # Qwen3-Next: q_proj also yields the output gate
    proj = d * (q_proj + 2 * kv_out) + (q_proj + 2 * kv_out) * a.qkv_bias + q_out * d + d * a.o_bias
    norms = {"none": 0, "l2": 0, "head": 2 * a.head_dim, "full": q_out + kv_out}[a.qk_norm]
    return proj + norms + a.n_heads * a.sinks


def moa_expert_params(d: int, a: AttentionSpec) -> int:
    """One JetMoE attention expert: its q_proj (d -> n_kv_heads * head_dim) and o_proj (back to d)."""
    return 2 * d * a.n_kv_heads * a.head_dim


def swiglu_params(d: int, f: int, bias: bool = False) -> int:
    """gate, up (d -> f) and down (f -> d) projections."""
    return 3 * d * f + (2 * f + d) * bias


def expert_params(d: int, m: MoESpec) -> int:
    """One routed expert (with gpt-oss's projection biases)."""
    return swiglu_params(d, m.expert_ffn, m.expert_bias)


def norm_params(spec: ModelSpec) -> int:
    """Every norm's weights (and biases, for LayerNorm): two per layer (four for Gemma's sandwich), the final."""
    per_layer = 4 if spec.norm_placement == "sandwich" else 2
    width = 2 if spec.norm == "layer" else 1
    return (per_layer * spec.n_layers + 1) * spec.d_model * width


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by component. `routed_experts` counts every routed expert of every MoE layer (and
    JetMoE's attention experts, whose router is among `routers`)."""

    embedding: int
    lm_head: int
    attention: int
    dense_ffn: int
    routed_experts: int
    shared_experts: int
    routers: int
    norms: int
    routed_active: int  # the routed experts a token actually uses (top-k of E, every MoE layer)
    expert_size: int  # one routed expert (of the first MoE layer)

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_ffn + self.routed_experts
                + self.shared_experts + self.routers + self.norms)

    @property
    def active(self) -> int:
        """Everything but the unselected routed experts."""
        return self.total - self.routed_experts + self.routed_active

    @property
    def always_read(self) -> int:
        """Non-routed weights a decode step streams (embedding rows are gathered, not streamed)."""
        return self.total - self.routed_experts - self.embedding

    @property
    def matmul_active(self) -> int:
        """Active parameters that take part in a matmul per token, lm_head and embedding excluded."""
        return self.attention + self.dense_ffn + self.routed_active + self.shared_experts + self.routers

    def to_dict(self) -> dict[str, int]:
        out = asdict(self)
        out.update(total=self.total, active=self.active)
        return out


_RECENT: OrderedDict[int, tuple[ModelSpec, ParamBreakdown]] = OrderedDict()  # id -> (the spec, its counts)


def count_params(spec: ModelSpec) -> ParamBreakdown:
    """Exact parameter counts, as `sum(p.numel())` of the transformers model built from the same config
    (where a family reads a field transformers ignores, the spec's notes say so). The last 64 specs' counts are
    kept (by identity: a plan search prices one spec thousands of times)."""
    hit = _RECENT.get(id(spec))
    if hit is not None and hit[0] is spec:
        _RECENT.move_to_end(id(spec))
        return hit[1]
    counts = _count_params(spec)
    _RECENT[id(spec)] = (spec, counts)
    if len(_RECENT) > 64:
        _RECENT.popitem(last=False)
    return counts


def _count_params(spec: ModelSpec) -> ParamBreakdown:
    d = spec.d_model
    attention = dense = routed = shared = routers = active = 0
    for layer, n in spec.layer_groups:  # each distinct layer once, times how many layers are it
        a = layer.attention
        attention += n * attention_params(d, a)
        if a.moa_experts:  # routed weights: a token uses top-k = n_heads // n_kv_heads of the experts
            attention -= n * a.moa_experts * (moa_expert_params(d, a) + d)
            routed += n * a.moa_experts * moa_expert_params(d, a)
            active += n * (a.n_heads // a.n_kv_heads) * moa_expert_params(d, a)
            routers += n * a.moa_experts * d
        if isinstance(layer.ffn, FFNSpec):
            dense += n * swiglu_params(d, layer.ffn.width, spec.mlp_bias)
            continue
        m = layer.ffn
        expert = expert_params(d, m)
        routed += n * m.n_experts * expert
        active += n * m.top_k * expert
        # Shared experts run as one SwiGLU of width n_shared * shared_ffn; with biased MLPs (DeepSeek-V2's
        # mlp_bias) transformers builds it even at width 0, leaving the down-projection bias.
        if m.n_shared or spec.mlp_bias:
            shared += n * swiglu_params(d, m.n_shared * m.shared_ffn, spec.mlp_bias)
        shared += n * d * m.shared_gate
        routers += n * (m.n_experts * d + m.n_experts * m.router_bias)
    first = spec.moe
    return ParamBreakdown(
        embedding=spec.vocab_size * d,
        # a tied lm_head still has its own bias (Phi-3.5-MoE's lm_head_bias)
        lm_head=(0 if spec.tie_embeddings else spec.vocab_size * d) + spec.vocab_size * spec.lm_head_bias,
        attention=attention,
        dense_ffn=dense,
        routed_experts=routed,
        shared_experts=shared,
        routers=routers,
        norms=norm_params(spec),
        routed_active=active,
        expert_size=expert_params(d, first) if first else 0,
    )
