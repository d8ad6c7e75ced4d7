"""Trains the small byte-level long-context Llama (issue 8) on the retrieval tasks of tasks.py.

Resumable: each invocation trains for --minutes (counted from the process's start, imports included),
saves <run>/state.pt (weights + AdamW: the full resume) and exits; the next one goes on from there
along the same curriculum. See README.md for the commands.

    python3 scripts/gpu/train/train.py --run runs/skv-small --minutes 8 --export-state $OUT/ckpt

--export-state DIR also writes a cold-restart checkpoint, small enough to come back from the GPU tool
and to be carried to a fresh machine: the fp32 weights in safetensors shards of <= 15 MiB (54 MB in
4 files for the default geometry; --export-dtype bfloat16 halves it but drops the fp32 master
precision), DIR/state.json (step, args, config) and DIR/log.jsonl. --resume-from DIR loads one when
<run>/state.pt is absent: the weights and the step come back, AdamW's moments do not (they would be
2 x 54 MB more), so AdamW restarts empty and the learning rate re-warms linearly over --rewarmup
steps on top of the usual schedule.
"""
import time

START = time.time()  # --minutes counts from here: the imports below take 10-20 s on the GPU machine

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import shards  # noqa: E402
import tasks  # noqa: E402

BOS, EOS, PAD = 256, 257, 258
VOCAB = tasks.SPEC['vocab']['bytes'] + len(tasks.SPEC['vocab']['specials'])


def rope_kwargs(theta):
    """RoPE theta as this transformers spells it: rope_parameters (v5), else rope_theta (v4)."""
    if 'rope_parameters' in inspect.signature(LlamaConfig.__init__).parameters:
        return dict(rope_parameters=dict(rope_type='default', rope_theta=theta))
    return dict(rope_theta=theta)


def rope_theta_of(cfg):
    """A config's RoPE theta wherever this transformers keeps it (rope_parameters in v5)."""
    params = getattr(cfg, 'rope_parameters', None) or {}
    return params.get('rope_theta', getattr(cfg, 'rope_theta', None))


def model_config(a):
    """~13.5M parameters (27 MB in bf16): 6 layers, hidden 512, 8 q / 2 kv heads of 64, tied embeddings."""
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.hidden // a.heads,
        max_position_embeddings=a.max_positions, rms_norm_eps=1e-5, **rope_kwargs(a.rope_theta),
        tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        attention_bias=False, mlp_bias=False, attn_implementation='sdpa')  # flash kernels through PyTorch SDPA


def check_rope(model, theta):
    """Stops before any training if the model's RoPE frequencies are not those of `theta` (a
    transformers version that ignored the spelling would train at its default theta, silently)."""
    rot = getattr(model.model, 'rotary_emb', None)
    inv = getattr(rot, 'inv_freq', None)
    if inv is None:
        print('warning: no model.model.rotary_emb.inv_freq to check RoPE theta against', flush=True)
        return
    d = 2 * inv.numel()
    want = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if not torch.allclose(inv.double().cpu(), want, rtol=1e-3):
        raise SystemExit(f'RoPE frequencies are not those of theta {theta} (first {inv[1].item():.3g}, want {want[1].item():.3g})')


GEOMETRY = ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
            'num_key_value_heads', 'head_dim', 'tie_word_embeddings')


def tied_skip(model):
    """Tensors a checkpoint leaves out: the output projection when it is the embedding itself (the
    same storage: safetensors refuses shared tensors, and the loaders tie them again)."""
    tied = model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return ('lm_head.weight',) if tied else ()


def export_state(model, step, a, rewarm_from, log_path):
    """The cold-restart checkpoint (see the module's doc), written to a.export_state + '.tmp' and then
    moved into place, so a killed export never leaves a half-written folder under the final name."""
    dtype = getattr(torch, a.export_dtype)
    tmp = a.export_state.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    files = shards.save_shards(model.state_dict(), tmp, dtype, skip=tied_skip(model))
    meta = dict(step=step, rewarm_from=rewarm_from, dtype=a.export_dtype, files=files, args=vars(a),
                config=json.loads(model.config.to_json_string(use_diff=False)))
    with open(os.path.join(tmp, 'state.json'), 'w') as fh:
        json.dump(meta, fh, indent=1, default=str)
    if os.path.exists(log_path):
        shutil.copyfile(log_path, os.path.join(tmp, 'log.jsonl'))
    shutil.rmtree(a.export_state, ignore_errors=True)
    os.replace(tmp, a.export_state)
    size = sum(os.path.getsize(os.path.join(a.export_state, f)) for f in os.listdir(a.export_state))
    print(f'exported {a.export_state} at step {step}: {len(os.listdir(a.export_state))} files, {size / 2**20:.1f} MiB ({a.export_dtype} weights)', flush=True)


def load_cold(model, folder, a):
    """Loads a cold-restart checkpoint into `model`; returns its step. Refuses another geometry."""
    with open(os.path.join(folder, 'state.json')) as fh:
        meta = json.load(fh)
    mine, theirs = model.config.to_dict(), meta['config']
    diff = [k for k in GEOMETRY if mine.get(k) != theirs.get(k)]
    if diff:
        raise SystemExit(f'{folder} has another geometry ({", ".join(f"{k} {theirs.get(k)} != {mine.get(k)}" for k in diff)}): pass the same flags')
    if meta['args'].get('curriculum') != a.curriculum:
        print(f'warning: {folder} was trained with --curriculum {meta["args"].get("curriculum")}, this run uses {a.curriculum}', flush=True)
    load_weights(model, shards.load_shards(folder), folder)
    return meta['step'], meta.get('dtype', 'float32')


def load_weights(model, weights, source):
    """Weights by name (any float dtype) into `model` as fp32; refuses any tensor missing (but a tied
    lm_head) or unknown, naming `source`."""
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    if unexpected or set(missing) - set(tied_skip(model)):
        raise SystemExit(f'{source}: missing {missing}, unexpected {unexpected}')


def lr_factor(s, warmup, total, rewarm_from, rewarmup):
    """The learning rate's multiplier at step s: linear warm-up over `warmup`, cosine to 0 at `total`,
    and after a cold restart at step `rewarm_from` (AdamW's moments empty) a linear re-warm-up over `rewarmup`."""
    f = min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    if rewarm_from is not None and rewarmup > 0:
        f *= min(1.0, (s - rewarm_from + 1) / rewarmup)
    return f


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


def copy_row(length, rng):
    """A row that only copying predicts: random printable bytes R (32 to length/2 - 1 of them), then R
    again and again up to `length`; every byte of a repeat but its first has loss. NOTE: the first run
    (README.md, Knobs) learned no retrieval in 2000 steps; rows like these are the classic way to make
    a small model find its copy (induction) heads, which every retrieval task needs."""
    n = rng.randint(32, max(32, length // 2 - 1))
    seg = [rng.randint(33, 126) for _ in range(n)]
    ids, mask = [BOS] + seg, [0] * (n + 1)
    while len(ids) < length:
        ids += seg
        mask += [0] + [1] * (n - 1)
    return ids[:length], mask[:length]


def batch(length, tokens_per_batch, step, queries, copy_every=0):
    """One batch of rows of `length` tokens (padded), the tasks in turn; seeds unique per (step, row).
    With copy_every k, row i with i % k == 0 is a copy_row instead. Returns ids, loss mask, and which
    rows are task rows (the answer loss is logged over those)."""
    rows = max(1, tokens_per_batch // length)
    rng = random.Random(step)
    names = tasks.TASK_NAMES
    x = torch.full((rows, length), PAD, dtype=torch.long)
    m = torch.zeros((rows, length), dtype=torch.float32)
    task_rows = torch.ones(rows, dtype=torch.bool)
    for r in range(rows):
        i = step * rows + r
        if copy_every and i % copy_every == 0:
            ids, mask = copy_row(length, rng)
            task_rows[r] = False
        else:
            ids, mask = training_row(names[i % len(names)], length, i, queries, rng)
        x[r, :len(ids)] = torch.tensor(ids)
        m[r, :len(mask)] = torch.tensor(mask, dtype=torch.float32)
    return x, m, task_rows


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
            copy_every = self.a.copy_every if length <= self.a.copy_until else 0
            yield (step, length, *batch(length, self.a.tokens_per_batch, step, self.a.queries, copy_every))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True, help='folder of state.pt, log.jsonl')
    ap.add_argument('--minutes', type=float, default=8.0, help='train this long, then save and exit')
    ap.add_argument('--curriculum', default='512:2500,1024:1200,4096:800,8192:600,16384:800')
    ap.add_argument('--tokens-per-batch', type=int, default=65536)
    ap.add_argument('--queries', type=int, default=4, help='questions per row (tasks with several needles)')
    ap.add_argument('--copy-every', type=int, default=4, help='every k-th row a copy_row (0: none)')
    ap.add_argument('--copy-until', type=int, default=4096, help='copy rows only in stages of at most this length')
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
    ap.add_argument('--workers', type=int, default=min(12, os.cpu_count() or 1), help='processes building batches ahead')
    ap.add_argument('--export-state', metavar='DIR', help='also write the cold-restart checkpoint here (e.g. $OUT/ckpt)')
    ap.add_argument('--export-dtype', default='float32', choices=('float32', 'bfloat16'), help='of --export-state\'s weights')
    ap.add_argument('--resume-from', metavar='DIR', help='a cold-restart checkpoint to start from when <run>/state.pt is absent')
    ap.add_argument('--rewarmup', type=int, default=50, help='steps of linear lr re-warm-up after --resume-from')
    a = ap.parse_args()
    start = START
    os.makedirs(a.run, exist_ok=True)
    device = 'cuda'
    torch.manual_seed(0)
    curriculum = parse_curriculum(a.curriculum)
    total = sum(s for _, s in curriculum)
    model = LlamaForCausalLM(model_config(a))
    check_rope(model, a.rope_theta)
    state_path = os.path.join(a.run, 'state.pt')
    log_path = os.path.join(a.run, 'log.jsonl')
    step, rewarm_from, st = 0, None, None
    if os.path.exists(state_path):
        st = torch.load(state_path, map_location='cpu', weights_only=False)
        model.load_state_dict(st['model'])
        step, rewarm_from = st['step'], st.get('rewarm_from')
        print(f'resumed at step {step}/{total} from {state_path} (weights and AdamW state)', flush=True)
    elif a.resume_from and os.path.exists(os.path.join(a.resume_from, 'state.json')):
        step, dtype = load_cold(model, a.resume_from, a)
        rewarm_from = step
        if not os.path.exists(log_path) and os.path.exists(os.path.join(a.resume_from, 'log.jsonl')):
            shutil.copyfile(os.path.join(a.resume_from, 'log.jsonl'), log_path)
        print(f'resumed at step {step}/{total} from the cold checkpoint {a.resume_from} ({dtype} weights only): '
              f'AdamW restarts with empty moments, lr re-warms linearly over {a.rewarmup} steps (to step {step + a.rewarmup}) '
              f'on top of the cosine schedule', flush=True)
    elif a.resume_from:
        print(f'no {state_path} and no {a.resume_from}/state.json: starting from scratch', flush=True)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    if st is not None:
        opt.load_state_dict(st['opt'])
        del st
    sched = lambda s: lr_factor(s, a.warmup, total, rewarm_from, a.rewarmup)
    log = open(log_path, 'a')
    model.train()
    loader = torch.utils.data.DataLoader(Batches(step, curriculum, a), batch_size=None, num_workers=a.workers,
                                         prefetch_factor=4 if a.workers else None, pin_memory=True)
    for at, length, x, m, task_rows in loader:
        if time.time() - start >= a.minutes * 60:
            break
        assert at == step, f'batch of step {at} at step {step}'
        x, m, task_rows = x.to(device, non_blocking=True), m.to(device, non_blocking=True), task_rows.to(device, non_blocking=True)
        for g in opt.param_groups:
            g['lr'] = a.lr * sched(step)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits = model(input_ids=x).logits[:, :-1]
        target, mask = x[:, 1:], m[:, 1:]
        per = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), target.reshape(-1), reduction='none').view_as(target)
        real = (target != PAD).float()
        weight = mask + a.context_weight * (1 - mask) * real
        loss = (per * weight).sum() / weight.sum()
        task_mask = mask * task_rows[:, None]
        answer_loss = (per * task_mask).sum() / task_mask.sum().clamp(min=1)
        copy_mask = mask - task_mask
        copy_loss = (per * copy_mask).sum() / copy_mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 20 == 0 or step == total:
            rec = dict(step=step, length=length, loss=loss.item(), answer_loss=answer_loss.item(), copy_loss=copy_loss.item(), lr=opt.param_groups[0]['lr'], minutes=(time.time() - start) / 60)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + '\n')
            log.flush()
    log.close()
    torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, rewarm_from=rewarm_from, args=vars(a),
                    config=model.config.to_dict()), state_path + '.tmp')
    os.replace(state_path + '.tmp', state_path)  # a killed save never leaves a half-written state
    print(f'saved {state_path} at step {step}/{total} ({"done" if step >= total else "run again to continue"})', flush=True)
    if a.export_state:
        export_state(model, step, a, rewarm_from, log_path)
    print(f'train.py: {(time.time() - START) / 60:.2f} minutes in all', flush=True)


if __name__ == '__main__':
    main()
