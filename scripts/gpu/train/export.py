"""Exports a training run as a Hugging Face checkpoint with a model card, after measuring accuracy
with full attention per task and length (greedy answers of held-out `eval` seeds).

    python3 scripts/gpu/train/export.py --run runs/skv-small --out models/skv-small --samples 50

Writes <out>/model.safetensors (bf16), config.json, eval.json and README.md (the model card).
"""
import argparse
import json
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import tasks
from train import BOS, PAD

MAX_BYTES = 30 * 2 ** 20  # the limit on the committed weights


@torch.no_grad()
def accuracy(model, task, length, samples, batch):
    """Share of `samples` eval prompts of a task and length answered exactly (greedy)."""
    right = 0
    for i0 in range(0, samples, batch):
        rows = [tasks.draw_sample(task, length, i) for i in range(i0, min(samples, i0 + batch))]
        ids = [[BOS] + list(r['prompt'].encode()) for r in rows]
        n = max(len(x) for x in ids)
        # Left padding, so every row's answer starts at the same column.
        x = torch.tensor([[PAD] * (n - len(r)) + r for r in ids], device='cuda')
        att = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in ids], device='cuda')
        width = max(len(r['answer'].encode()) for r in rows)
        out = model.generate(input_ids=x, attention_mask=att, max_new_tokens=width, do_sample=False, pad_token_id=PAD)
        for r, o in zip(rows, out[:, n:].tolist()):
            want = list(r['answer'].encode())
            right += o[:len(want)] == want
    return right / samples


def card(cfg, st, results, lengths, args):
    log = [json.loads(l) for l in open(os.path.join(args.run, 'log.jsonl'))] if os.path.exists(os.path.join(args.run, 'log.jsonl')) else []
    last = log[-1] if log else {}
    params = results['parameters']
    rows = '\n'.join(f"| {t} | " + ' | '.join(f"{100 * results['accuracy'][t][str(n)]:.0f} %" for n in lengths) + ' |' for t in tasks.TASK_NAMES)
    return f"""# shadowkv-small: a byte-level long-context retrieval model

A Llama-architecture model (`LlamaForCausalLM`) trained from scratch for ShadowKV's accuracy
evaluation (issue 8): {params / 1e6:.1f}M parameters, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size},
{cfg.num_attention_heads} query / {cfg.num_key_value_heads} kv heads of {cfg.head_dim}, RoPE theta {cfg.rope_theta:g}, tied embeddings,
vocabulary {cfg.vocab_size} (bytes 0-255, then {', '.join(tasks.SPEC['vocab']['specials'])}).

## Data
Synthetic, generated on the fly by `scripts/gpu/train/tasks.py` from `bench/eval/tasks.json`
(`train` seeds; the evaluation uses `eval` seeds, never seen in training): passkey in repetitive
filler, one and four needles in varied filler, key-value lookup. Up to {st['args']['queries']} questions per row;
answer bytes weigh 1 in the loss, context bytes {st['args']['context_weight']}.
Curriculum (length:steps): `{st['args']['curriculum']}`, {st['args']['tokens_per_batch']} tokens per batch, AdamW lr {st['args']['lr']}, bf16 autocast, SDPA attention.

## Training
{st['step']} steps; last logged loss {last.get('loss', float('nan')):.4f}, answer loss {last.get('answer_loss', float('nan')):.4f} (at length {last.get('length', '?')}).

## Accuracy with full attention
Exact greedy answers, {args.samples} held-out prompts per cell (transformers, bf16):

| task | {' | '.join(str(n) for n in lengths)} |
|---|{'|'.join('---:' for _ in lengths)}|
{rows}

Made by `scripts/gpu/train/export.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--lengths', default='4096,8192,16384,32768')
    ap.add_argument('--samples', type=int, default=50)
    ap.add_argument('--batch', type=int, default=8)
    a = ap.parse_args()
    st = torch.load(os.path.join(a.run, 'state.pt'), map_location='cuda', weights_only=False)
    cfg = LlamaConfig.from_dict(st['config'])
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(st['model'])
    model = model.to('cuda', torch.bfloat16).eval()
    lengths = [int(n) for n in a.lengths.split(',')]
    acc = {t: {str(n): accuracy(model, t, n, a.samples, a.batch) for n in lengths} for t in tasks.TASK_NAMES}
    results = dict(parameters=sum(p.numel() for p in model.parameters()), step=st['step'], samples=a.samples, accuracy=acc)
    print(json.dumps(results, indent=1))
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    if size > MAX_BYTES:
        raise SystemExit(f'{a.out} is {size / 2**20:.1f} MB, over the 30 MB limit: train a smaller model (--hidden, --layers)')
    json.dump(results, open(os.path.join(a.out, 'eval.json'), 'w'), indent=1)
    open(os.path.join(a.out, 'README.md'), 'w').write(card(cfg, st, results, lengths, a))
    print(f'wrote {a.out} ({size / 2**20:.1f} MB)')


if __name__ == '__main__':
    main()
