"""Exports a training run as a Hugging Face checkpoint with a model card, and measures its accuracy
with full attention per task and length (greedy answers of held-out `eval` seeds).

    python3 scripts/gpu/train/export.py --run runs/skv-small --out models/skv-small --samples 50
    python3 scripts/gpu/train/export.py --resume-from ckpt --out models/skv-small     # from train.py --export-state

Reads <run>/state.pt, or, when there is none, the cold-restart checkpoint of --resume-from. Writes the
weights first, in bf16 safetensors shards of <= 15 MiB (the GPU tool returns files of <= 16 MiB):
model-00001-of-00002.safetensors, model-00002-of-00002.safetensors and model.safetensors.index.json
for the default geometry, then config.json; refuses more than 30 MiB of them. Then the accuracy (cells
in order of length, skipped once --eval-minutes have passed), eval.json and README.md (the model card).
"""
import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import shards  # noqa: E402
import tasks  # noqa: E402
from train import BOS, PAD, load_weights, rope_theta_of, tied_skip  # noqa: E402

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


def load_source(a):
    """(fp32 weights by name, dict(step, args, config), the training log's path, where they came from):
    <run>/state.pt when it exists, else the cold-restart checkpoint --resume-from."""
    state = os.path.join(a.run, 'state.pt') if a.run else None
    if state and os.path.exists(state):
        st = torch.load(state, map_location='cpu', weights_only=False)
        return st['model'], dict(step=st['step'], args=st['args'], config=st['config']), os.path.join(a.run, 'log.jsonl'), state
    if a.resume_from and os.path.exists(os.path.join(a.resume_from, 'state.json')):
        with open(os.path.join(a.resume_from, 'state.json')) as fh:
            meta = json.load(fh)
        run_log = os.path.join(a.run, 'log.jsonl') if a.run else None
        log = run_log if run_log and os.path.exists(run_log) else os.path.join(a.resume_from, 'log.jsonl')
        return shards.load_shards(a.resume_from), meta, log, a.resume_from
    raise SystemExit(f'nothing to export: no {state} and no {a.resume_from}/state.json')


def write_model(model, out, limit):
    """The bf16 shards (tied lm_head left out), then config.json; returns the files written."""
    files = shards.save_shards(model.state_dict(), out, torch.bfloat16, limit=limit, skip=tied_skip(model))
    path = os.path.join(out, 'config.json')
    # The cache settings an earlier evaluation wrote into this folder's config.json (`shadowkv`) stay.
    hints = None
    if os.path.exists(path):
        with open(path) as fh:
            hints = json.load(fh).get('shadowkv')
    model.config.architectures = ['LlamaForCausalLM']
    model.config.save_pretrained(out)  # config.json alone (the weights are ours, above)
    with open(path) as fh:
        cfg = json.load(fh)
    cfg['torch_dtype' if 'torch_dtype' in cfg else 'dtype'] = 'bfloat16'  # as save_pretrained records it
    if hints is not None:
        cfg['shadowkv'] = hints
    with open(path, 'w') as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
    return files + ['config.json']


def copy_rows(args):
    """The card's sentence on train.py's copy rows (none before --copy-every existed)."""
    k = args.get('copy_every', 0)
    if not k:
        return ''
    return (f" Every {k}th row in stages of up to {args.get('copy_until')} tokens is a copy row instead: random bytes,"
            " then the same bytes again, loss on the repeats (what finds a small model's copy heads).")


def card(cfg, st, results, lengths, args, log_path):
    log = [json.loads(l) for l in open(log_path)] if log_path and os.path.exists(log_path) else []
    last = log[-1] if log else {}
    params = results['parameters']
    cell = lambda v: 'not run' if v is None else f'{100 * v:.0f} %'
    rows = '\n'.join(f"| {t} | " + ' | '.join(cell(results['accuracy'][t][str(n)]) for n in lengths) + ' |' for t in tasks.TASK_NAMES)
    return f"""# shadowkv-small: a byte-level long-context retrieval model

A Llama-architecture model (`LlamaForCausalLM`) trained from scratch for ShadowKV's accuracy
evaluation (issue 8): {params / 1e6:.1f}M parameters, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size},
{cfg.num_attention_heads} query / {cfg.num_key_value_heads} kv heads of {cfg.head_dim}, RoPE theta {rope_theta_of(cfg):g}, tied embeddings,
vocabulary {cfg.vocab_size} (bytes 0-255, then {', '.join(tasks.SPEC['vocab']['specials'])}).

## Data
Synthetic, generated on the fly by `scripts/gpu/train/tasks.py` from `bench/eval/tasks.json`
(`train` seeds; the evaluation uses `eval` seeds, never seen in training): passkey in repetitive
filler, one and four needles in varied filler, key-value lookup. Up to {st['args']['queries']} questions per row;
answer bytes weigh 1 in the loss, context bytes {st['args']['context_weight']}.{copy_rows(st['args'])}
Curriculum (length:steps): `{st['args']['curriculum']}`, {st['args']['tokens_per_batch']} tokens per batch, AdamW lr {st['args']['lr']}, bf16 autocast, SDPA attention.

## Training
{st['step']} steps ({last.get('minutes', float('nan')):.1f} minutes of the last call; the per-20-step log is `train-log.jsonl`); last logged loss {last.get('loss', float('nan')):.4f}, answer loss {last.get('answer_loss', float('nan')):.4f} (at length {last.get('length', '?')}).

## Accuracy with full attention
Exact greedy answers, {args.samples} held-out prompts per cell (transformers, bf16){'' if not results['skipped'] else f"; {len(results['skipped'])} cells not run (the --eval-minutes budget of the export ran out)"}:

| task | {' | '.join(str(n) for n in lengths)} |
|---|{'|'.join('---:' for _ in lengths)}|
{rows}

Made by `scripts/gpu/train/export.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', help='training folder whose state.pt to export (and whose log.jsonl the card reads)')
    ap.add_argument('--resume-from', metavar='DIR', help='a cold-restart checkpoint (train.py --export-state), used when <run>/state.pt is absent')
    ap.add_argument('--out', required=True)
    ap.add_argument('--lengths', default='4096,8192,16384,32768')
    ap.add_argument('--samples', type=int, default=50)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--shard-mib', type=float, default=15.0, help='tensor bytes per safetensors shard, in MiB')
    ap.add_argument('--eval-minutes', type=float, default=None, help='skip the cells left once this long has passed since the start')
    a = ap.parse_args()
    if not a.run and not a.resume_from:
        ap.error('give --run or --resume-from')
    weights, st, log_path, source = load_source(a)
    cfg = LlamaConfig.from_dict(st['config'])
    model = LlamaForCausalLM(cfg)
    load_weights(model, weights, source)
    del weights
    model = model.to('cuda', torch.bfloat16).eval()
    print(f'loaded {source} at step {st["step"]}', flush=True)
    os.makedirs(a.out, exist_ok=True)
    files = write_model(model, a.out, int(a.shard_mib * 2 ** 20))
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in files)
    print(f'wrote {a.out}: {", ".join(files)} ({size / 2**20:.1f} MiB)', flush=True)
    if size > MAX_BYTES:
        raise SystemExit(f'{a.out} is {size / 2**20:.1f} MiB, over the 30 MiB limit: train a smaller model (--hidden, --layers)')
    lengths = [int(n) for n in a.lengths.split(',')]
    acc, skipped = {t: {} for t in tasks.TASK_NAMES}, []
    for n in lengths:  # shortest first, so a spent budget leaves the longest cells out
        for t in tasks.TASK_NAMES:
            if a.eval_minutes is not None and time.time() - START > a.eval_minutes * 60:
                acc[t][str(n)] = None
                skipped.append(f'{t}@{n}')
                continue
            t0 = time.time()
            acc[t][str(n)] = accuracy(model, t, n, a.samples, a.batch)
            print(f'{t} at {n}: {100 * acc[t][str(n)]:.0f} % ({time.time() - t0:.0f} s)', flush=True)
    if skipped:
        print(f'not run (--eval-minutes {a.eval_minutes}): {", ".join(skipped)}', flush=True)
    results = dict(parameters=sum(p.numel() for p in model.parameters()), step=st['step'], samples=a.samples,
                   accuracy=acc, skipped=skipped, source=source)
    print(json.dumps(results, indent=1))
    json.dump(results, open(os.path.join(a.out, 'eval.json'), 'w'), indent=1)
    open(os.path.join(a.out, 'README.md'), 'w').write(card(cfg, st, results, lengths, a, log_path))
    if log_path and os.path.exists(log_path):
        shutil.copyfile(log_path, os.path.join(a.out, 'train-log.jsonl'))
    print(f'wrote {a.out}/eval.json and README.md ({(time.time() - START) / 60:.2f} minutes in all)', flush=True)


if __name__ == '__main__':
    main()
