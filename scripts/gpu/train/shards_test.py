"""Checks shards.py's planning without torch: python3 scripts/gpu/train/shards_test.py

The default geometry of train.py (6 layers, hidden 512, SwiGLU 1024, 8 q / 2 kv heads of 64, vocabulary
260, tied) must come back from the GPU tool: bf16 in 2 shards (the export), fp32 in 4 (the cold-restart
checkpoint, + state.json + log.jsonl = 6 files of the 8 a call returns), every shard <= 15 MiB.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402


def llama_tensors(vocab=260, hidden=512, inter=1024, layers=6, heads=8, kv=2, head_dim=64):
    """(name, elements) in the order of LlamaForCausalLM's state_dict, the tied lm_head left out."""
    out = [('model.embed_tokens.weight', vocab * hidden)]
    for i in range(layers):
        p = f'model.layers.{i}.'
        out += [(p + 'self_attn.q_proj.weight', heads * head_dim * hidden), (p + 'self_attn.k_proj.weight', kv * head_dim * hidden),
                (p + 'self_attn.v_proj.weight', kv * head_dim * hidden), (p + 'self_attn.o_proj.weight', hidden * heads * head_dim),
                (p + 'mlp.gate_proj.weight', inter * hidden), (p + 'mlp.up_proj.weight', inter * hidden),
                (p + 'mlp.down_proj.weight', hidden * inter), (p + 'input_layernorm.weight', hidden),
                (p + 'post_attention_layernorm.weight', hidden)]
    return out + [('model.norm.weight', hidden)]


def check():
    elements = llama_tensors()
    params = sum(n for _, n in elements)
    assert 13_400_000 < params < 13_600_000, params
    for width, count in ((2, 2), (4, 4)):
        sizes = [(k, n * width) for k, n in elements]
        groups = shards.plan(sizes)
        assert len(groups) == count, (width, len(groups))
        by = dict(sizes)
        assert all(sum(by[k] for k in g) <= shards.SHARD_BYTES for g in groups)
        assert [k for g in groups for k in g] == [k for k, _ in sizes], 'order kept, every tensor once'
        idx = shards.index(groups, sizes)
        assert idx['metadata']['total_size'] == params * width
        assert sorted(set(idx['weight_map'].values())) == shards.shard_files(count)
        assert set(idx['weight_map']) == set(by)
        print(f'{width * 8}-bit: {count} shards of {", ".join(f"{sum(by[k] for k in g) / 2**20:.1f}" for g in groups)} MiB')
    assert shards.shard_files(1) == ['model.safetensors']
    assert shards.shard_files(2) == ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    assert shards.plan([('a', 5), ('b', 5), ('c', 1)], limit=10) == [['a', 'b'], ['c']]
    assert shards.plan([], limit=10) == []
    try:
        shards.plan([('big', 11)], limit=10)
        raise AssertionError('a tensor over the limit must be refused')
    except ValueError:
        pass
    print('shards_test: ok')


if __name__ == '__main__':
    check()
