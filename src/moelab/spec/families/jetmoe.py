"""JetMoE (jetmoe/jetmoe-8b) in the engine: every layer is a mixture of attention heads (MoA) and a MoE MLP.

MoA: one kv_proj (d -> 2 * num_key_value_heads * kv_channels) shared by all; each of num_local_experts
attention experts owns a q_proj (d -> num_key_value_heads * kv_channels) and an o_proj back to d; a router
(d -> experts) keeps the top num_experts_per_tok logits and softmaxes them; a token's queries are its k
experts' heads (num_attention_heads = num_key_value_heads * k, the keys and values repeated k times), its
output the weighted sum of their o_proj outputs plus one bias (d). MoE: the same router rule over
num_local_experts SwiGLU experts (input_linear d -> 2f: gate rows, then up; output_linear f -> d), plus one
output bias (d). RMSNorms, RoPE over kv_channels, embeddings tied by default.
Source: transformers models/jetmoe/modeling_jetmoe.py (JetMoeMoA, JetMoeMoE, JetMoeTopKGating) and
configuration_jetmoe.py.

On the spec: AttentionSpec(n_heads = k * kv heads, moa_experts = experts, o_bias for the MoA bias) and
MoESpec(router "topk_softmax"); the MoE output bias is ModelSpec.mlp_bias with no shared expert, which
count_params counts as the d-sized down-projection bias of a width-0 shared expert, the same vector added to
every token's MoE output (as DeepSeek-V2's mlp_bias builds it).

Engine only: moelab.nn does not build JetMoE (no `write`): its attention routes each token's query heads to
experts, which moelab.nn's attention (one q_proj and o_proj per layer) does not have."""

from __future__ import annotations

from moelab.spec.families.base import Family, register
from moelab.spec.families.common import finish


@register
class JetMoe(Family):
    model_types = ("jetmoe",)
    architecture = "JetMoeForCausalLM"
    activation_key = "activation_function"
    activations = {"silu": "silu", "swish": "silu"}  # JetMoeMoE: act(gate half) * up half

    def read(self, c, name):
        experts, top_k = c.int("num_local_experts", 8), c.int("num_experts_per_tok", 2)
        kv_heads = c.int("num_key_value_heads", 16)
        # a token's query heads are its k experts' kv-heads heads each (JetMoeMoA); num_attention_heads, which
        # JetMoeConfig derives the same way, is not read (the model ignores a given one); head_dim is kv_channels
        # whatever hidden_size is. Absent JetMoE fields take JetMoeConfig's defaults.
        attention = dict(n_heads=kv_heads * top_k, n_kv_heads=kv_heads, head_dim=c.int("kv_channels", 128),
                         o_bias=True, moa_experts=experts)
        moe = dict(n_experts=experts, top_k=top_k, expert_ffn=c.int("intermediate_size", 5632),
                   router="topk_softmax")
        if top_k > experts:
            c.cross_errors.append(f"num_experts_per_tok ({top_k}) exceeds num_local_experts ({experts})")
        return finish(c, name, attention, moe, range(c.int("num_hidden_layers")), ffn_dim=0, mlp_bias=True,
                      tie_embeddings=c.bool("tie_word_embeddings", True))
