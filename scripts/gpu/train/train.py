"""Trains the small byte-level long-context Llama (issue 8) on the retrieval tasks of tasks.py.

Resumable: each invocation trains for --minutes, saves <run>/state.pt and exits; the next one goes
on from there along the same curriculum. See README.md for the commands.

    python3 scripts/gpu/train/train.py --run runs/skv-small --minutes 8
"""
import argparse
import json
import math
import os
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import tasks

BOS, EOS, PAD = 256, 257, 258
VOCAB = tasks.SPEC['vocab']['bytes'] + len(tasks.SPEC['vocab']['specials'])


def model_config(a):
    """~13.5M parameters (27 MB in bf16): 6 layers, hidden 512, 8 q / 2 kv heads of 64, tied embeddings."""
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.hidden // a.heads,
        max_position_embeddings=a.max_positions, rope_theta=a.rope_theta, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        attention_bias=False, mlp_bias=False, attn_implementation='sdpa')  # flash kernels through PyTorch SDPA


def parse_curriculum(s):
    """'1024:300,4096:300' -> [(1024, 300), (4096, 300)]: sequence length and steps at it."""
    return [tuple(int(x) for x in part.split(':')) for part in s.split(',')]


def stage_at(curriculum, step):
    for length, steps in curriculum:
        if step < steps:
            return length
        step -= steps
    return None


def training_row(task, length, index, queries, rng):
    """Token ids and a loss mask: the sample's context, then up to `queries` questions, each answer's
    bytes (and the <eos> after it) the only tokens with loss."""
    several = tasks.SPEC['tasks'][task].get('needles', queries) > 1
    reserve = 96 * (queries - 1) if several else 0  # room for the extra questions, so the row stays within `length`
    sample, known = tasks.draw_with_needles(task, max(256, length - reserve), index, 'train')
    extra = [qa for qa in known if qa[1] != sample['answer']]
    rng.shuffle(extra)
    ids = [BOS] + list(sample['prompt'].encode())
    mask = [0] * len(ids)
    pairs = [(None, sample['answer'])] + [(q, a) for q, a in extra[:queries - 1]]
    for q, ans in pairs:
        if q is not None:
            qb = list(q.encode())
            ids += qb
            mask += [0] * len(qb)
        ab = list(ans.encode()) + [EOS]
        ids += ab
        mask += [0] + [1] * (len(ab) - 1)  # the leading space is free: the answer is the value
    return ids[:length], mask[:length]


def batch(length, tokens_per_batch, step, queries):
    """One batch of rows of `length` tokens (padded), the tasks in turn; seeds unique per (step, row)."""
    rows = max(1, tokens_per_batch // length)
    rng = random.Random(step)
    names = tasks.TASK_NAMES
    x = torch.full((rows, length), PAD, dtype=torch.long)
    m = torch.zeros((rows, length), dtype=torch.float32)
    for r in range(rows):
        ids, mask = training_row(names[(step * rows + r) % len(names)], length, step * rows + r, queries, rng)
        x[r, :len(ids)] = torch.tensor(ids)
        m[r, :len(mask)] = torch.tensor(mask, dtype=torch.float32)
    return x, m


class Batches(torch.utils.data.IterableDataset):
    """The batches of steps [first, total) in order, built by DataLoader workers ahead of the GPU:
    built in the training loop, the Python task generators would leave the GPU idle between steps.
    Worker w of n takes steps first + w, first + w + n, ...; the loader reads the workers in turn,
    so the steps arrive in order and each batch is the same as on one process."""

    def __init__(self, first, curriculum, a):
        self.first, self.curriculum, self.a = first, curriculum, a
        self.total = sum(s for _, s in curriculum)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.first + w, self.total, n):
            length = stage_at(self.curriculum, step)
            yield (step, length, *batch(length, self.a.tokens_per_batch, step, self.a.queries))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True, help='folder of state.pt, log.jsonl')
    ap.add_argument('--minutes', type=float, default=8.0, help='train this long, then save and exit')
    ap.add_argument('--curriculum', default='1024:600,4096:500,8192:400,16384:500')
    ap.add_argument('--tokens-per-batch', type=int, default=131072)
    ap.add_argument('--queries', type=int, default=4, help='questions per row (tasks with several needles)')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--context-weight', type=float, default=0.1, help='loss weight of the context bytes (answers: 1)')
    ap.add_argument('--hidden', type=int, default=512)
    ap.add_argument('--intermediate', type=int, default=1024)
    ap.add_argument('--layers', type=int, default=6)
    ap.add_argument('--heads', type=int, default=8)
    ap.add_argument('--kv-heads', type=int, default=2)
    ap.add_argument('--rope-theta', type=float, default=500000.0)
    ap.add_argument('--max-positions', type=int, default=65536)
    ap.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help='processes building batches ahead')
    a = ap.parse_args()
    start = time.time()
    os.makedirs(a.run, exist_ok=True)
    device = 'cuda'
    torch.manual_seed(0)
    curriculum = parse_curriculum(a.curriculum)
    total = sum(s for _, s in curriculum)
    model = LlamaForCausalLM(model_config(a)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    state_path = os.path.join(a.run, 'state.pt')
    step = 0
    if os.path.exists(state_path):
        st = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(st['model'])
        opt.load_state_dict(st['opt'])
        step = st['step']
        print(f'resumed at step {step}/{total}')
    sched = lambda s: min(1.0, (s + 1) / a.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    log = open(os.path.join(a.run, 'log.jsonl'), 'a')
    model.train()
    loader = torch.utils.data.DataLoader(Batches(step, curriculum, a), batch_size=None, num_workers=a.workers,
                                         prefetch_factor=4 if a.workers else None, pin_memory=True)
    for at, length, x, m in loader:
        if time.time() - start >= a.minutes * 60:
            break
        assert at == step, f'batch of step {at} at step {step}'
        x, m = x.to(device, non_blocking=True), m.to(device, non_blocking=True)
        for g in opt.param_groups:
            g['lr'] = a.lr * sched(step)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits = model(input_ids=x).logits[:, :-1]
        target, mask = x[:, 1:], m[:, 1:]
        per = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), target.reshape(-1), reduction='none').view_as(target)
        real = (target != PAD).float()
        weight = mask + a.context_weight * (1 - mask) * real
        loss = (per * weight).sum() / weight.sum()
        answer_loss = (per * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0 or step == total:
            rec = dict(step=step, length=length, loss=loss.item(), answer_loss=answer_loss.item(), lr=opt.param_groups[0]['lr'], minutes=(time.time() - start) / 60)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + '\n')
    torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, args=vars(a), config=model.config.to_dict()), state_path + '.tmp')
    os.replace(state_path + '.tmp', state_path)  # a killed save never leaves a half-written state
    print(f'saved {state_path} at step {step}/{total} ({"done" if step >= total else "run again to continue"})')


if __name__ == '__main__':
    main()
