"""Model parity, the transformers side: greedy tokens and logits of LlamaForCausalLM for a few
prompts, as JSON for scripts/hfParity.ts (our packages/llama loop with `full`) to compare against.

    python3 scripts/gpu/hf_parity.py --model models/skv-small --out bench/results/parity-hf-small.json
    python3 scripts/gpu/hf_parity.py --write-random models/parity-mha          # the second geometry
    python3 scripts/gpu/hf_parity.py --model models/parity-mha --out bench/results/parity-hf-mha.json

Runs in float32 with eager attention (the reference); prompts are eval samples of tasks.py.
"""
import argparse
import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train'))
import tasks  # noqa: E402

# The second geometry: MHA (6 q = 6 kv heads), head dim 32 apart from hidden / heads (48), tied embeddings.
MHA = dict(vocab_size=260, hidden_size=288, intermediate_size=576, num_hidden_layers=3, num_attention_heads=6,
           num_key_value_heads=6, head_dim=32, max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-6,
           tie_word_embeddings=True, attention_bias=False, mlp_bias=False, bos_token_id=256, eos_token_id=257)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', help='checkpoint folder (save_pretrained)')
    ap.add_argument('--out', help='JSON to write')
    ap.add_argument('--write-random', metavar='DIR', help='write a random MHA checkpoint (the second geometry) and exit')
    ap.add_argument('--lengths', default='300,2000', help='prompt lengths (tokens)')
    ap.add_argument('--new', type=int, default=64, help='greedy tokens per prompt')
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.write_random:
        model = LlamaForCausalLM(LlamaConfig(**MHA))
        # Larger than the init's std 0.02 so the logits are not all ~0 and greedy tokens vary.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.08)
        model.save_pretrained(a.write_random)  # safetensors (transformers 5 has no safe_serialization argument)
        print(f'wrote {a.write_random}')
        return
    model = LlamaForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation='eager').cuda().eval()
    cases = []
    for n in (int(x) for x in a.lengths.split(',')):
        s = tasks.draw_sample('needle_single', n, 0)
        ids = [256] + list(s['prompt'].encode())
        x = torch.tensor([ids], device='cuda')
        with torch.no_grad():
            out = model.generate(input_ids=x, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True, pad_token_id=258)
        tokens = out.sequences[0, len(ids):].tolist()
        # logits[i]: the distribution that chose tokens[i] (the prompt's last position, then each step).
        logits = [l[0].float().cpu().tolist() for l in out.logits]
        cases.append(dict(prompt=ids, tokens=tokens, logits=logits))
        print(f'{n} tokens: greedy {bytes(t for t in tokens if t < 256)[:40]!r}')
    json.dump(dict(model=a.model, transformers=__import__('transformers').__version__, torch=torch.__version__,
                   dtype='float32', cases=cases), open(a.out, 'w'))
    print(f'wrote {a.out}')


if __name__ == '__main__':
    main()
