"""Weights as safetensors shards small enough for the GPU tool's transfers (files back from $OUT: at
most 16 MiB each, 8 files): the Hugging Face layout, model.safetensors when one shard holds them all,
else model-0000i-of-0000n.safetensors + model.safetensors.index.json (weight_map: tensor -> file),
which transformers' from_pretrained and packages/llama's readCheckpoint both read.

The planning (plan, shard_files, index) is pure Python, checked by shards_test.py without torch;
save_shards and load_shards import torch and safetensors when called.
"""
import json
import os

SHARD_BYTES = 15 * 2 ** 20  # tensor bytes per shard; the header adds a few KB, so each file stays < 16 MiB
INDEX = 'model.safetensors.index.json'
SINGLE = 'model.safetensors'


def plan(sizes, limit=SHARD_BYTES):
    """[(name, nbytes)] in order -> [[name, ...]]: consecutive tensors, each group's bytes <= limit."""
    groups, size = [], 0
    for name, n in sizes:
        if n > limit:
            raise ValueError(f'tensor {name} is {n} bytes, over the shard limit of {limit}')
        if not groups or size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


def shard_files(count):
    """The file names of `count` shards, as transformers names them."""
    if count == 1:
        return [SINGLE]
    return [f'model-{i + 1:05d}-of-{count:05d}.safetensors' for i in range(count)]


def index(groups, sizes):
    """The index JSON (a dict) of a sharded checkpoint: metadata.total_size and weight_map."""
    total = sum(n for _, n in sizes)
    files = shard_files(len(groups))
    return dict(metadata=dict(total_size=total), weight_map={name: f for f, g in zip(files, groups) for name in g})


def clear(out):
    """Removes the weight files of an earlier checkpoint in `out`, so a new shard count leaves no stale shard."""
    if not os.path.isdir(out):
        return
    for f in os.listdir(out):
        if f == SINGLE or f == INDEX or (f.startswith('model-') and f.endswith('.safetensors')):
            os.remove(os.path.join(out, f))


def save_shards(state_dict, out, dtype, limit=SHARD_BYTES, skip=()):
    """Writes the tensors of `state_dict` (names in `skip` left out, e.g. a tied lm_head.weight) to `out`
    in `dtype`; returns the names of the files written (shards, then the index if any)."""
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    clear(out)
    tensors = {k: v.detach().to('cpu', dtype).contiguous() for k, v in state_dict.items() if k not in skip}
    sizes = [(k, t.numel() * t.element_size()) for k, t in tensors.items()]
    groups = plan(sizes, limit)
    files = shard_files(len(groups))
    for f, g in zip(files, groups):
        save_file({k: tensors[k] for k in g}, os.path.join(out, f), metadata={'format': 'pt'})
    if len(groups) > 1:
        with open(os.path.join(out, INDEX), 'w') as fh:
            json.dump(index(groups, sizes), fh, indent=2)
        files.append(INDEX)
    return files


def load_shards(folder, device='cpu'):
    """The tensors of a folder written by save_shards (or by transformers' save_pretrained), by name."""
    from safetensors.torch import load_file
    path = os.path.join(folder, INDEX)
    if os.path.exists(path):
        with open(path) as fh:
            files = sorted(set(json.load(fh)['weight_map'].values()))
    else:
        files = [SINGLE]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(folder, f), device=device))
    return out
