"""Parameter counts, total and active, broken down by component."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moelab.spec.model import AttentionSpec, ModelSpec


def attention_params(d: int, a: AttentionSpec) -> int:
    """Parameters of one attention block (projections, biases, q/k norms; MLA's low-rank path)."""
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
    proj = d * (q_out + 2 * kv_out) + (q_out + 2 * kv_out) * a.qkv_bias + q_out * d + d * a.o_bias
    norms = {"none": 0, "head": 2 * a.head_dim, "full": q_out + kv_out}[a.qk_norm]
    return proj + norms


def swiglu_params(d: int, f: int, bias: bool = False) -> int:
    """gate, up (d -> f) and down (f -> d) projections."""
    return 3 * d * f + (2 * f + d) * bias


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by component. `routed_experts` counts every routed expert of every MoE layer."""

    embedding: int
    lm_head: int
    attention: int
    dense_ffn: int
    routed_experts: int
    shared_experts: int
    routers: int
    norms: int
    routed_active: int  # the routed experts a token actually uses (top-k of E, every MoE layer)
    expert_size: int  # one routed expert

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


def count_params(spec: ModelSpec) -> ParamBreakdown:
    """Exact parameter counts, as `sum(p.numel())` of the transformers model built from the same config."""
    d, layers = spec.d_model, spec.n_layers
    moe, n_moe = spec.moe, spec.n_moe_layers
    expert = swiglu_params(d, moe.expert_ffn) if moe else 0
    routed = shared = routers = 0
    if moe and n_moe:
        routed = n_moe * moe.n_experts * expert
        # Shared experts run as one SwiGLU of width n_shared * shared_ffn; with biased MLPs (DeepSeek-V2's
        # mlp_bias) transformers builds it even at width 0, leaving the down-projection bias.
        if moe.n_shared or spec.mlp_bias:
            shared = n_moe * swiglu_params(d, moe.n_shared * moe.shared_ffn, spec.mlp_bias)
        shared += n_moe * d * moe.shared_gate
        routers = n_moe * moe.n_experts * d
    return ParamBreakdown(
        embedding=spec.vocab_size * d,
        lm_head=0 if spec.tie_embeddings else spec.vocab_size * d,
        attention=layers * attention_params(d, spec.attention),
        dense_ffn=spec.n_dense_layers * swiglu_params(d, spec.ffn_dim, spec.mlp_bias),
        routed_experts=routed,
        shared_experts=shared,
        routers=routers,
        norms=(2 * layers + 1) * d,
        routed_active=n_moe * moe.top_k * expert if moe else 0,
        expert_size=expert,
    )
