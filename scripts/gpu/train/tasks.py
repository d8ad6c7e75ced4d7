"""The retrieval tasks of bench/eval/tasks.json, drawn as bench/eval/TASKS.md says.

The Python twin of bench/eval/tasks.ts: one seed gives the same bytes (test/eval/tasks.test.ts
runs `python3 scripts/gpu/train/tasks.py --dump ...` and compares). No third-party imports.
"""
import argparse
import json
import os

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'bench', 'eval', 'tasks.json')
with open(SPEC_PATH, encoding='utf-8') as f:
    SPEC = json.load(f)
TASK_NAMES = list(SPEC['tasks'])
HEX = '0123456789abcdef'
M32 = 0xFFFFFFFF


def fnv1a32(s):
    h = 0x811C9DC5
    for ch in s:
        h = ((h ^ ord(ch)) * 0x01000193) & M32
    return h


def _imul(a, b):
    return (a * b) & M32


class Mulberry32:
    """mulberry32 with JS's 32-bit wrap-around, so next() matches Mulberry32.next() in tasks.ts."""

    def __init__(self, seed):
        self.state = seed & M32

    def next(self):
        self.state = (self.state + 0x6D2B79F5) & M32
        t = self.state
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & M32
        return ((t ^ (t >> 14)) & M32) / 4294967296

    def int(self, n):
        return int(self.next() * n)


def _value(rng, v):
    if v.get('hex'):
        return ''.join(HEX[rng.int(16)] for _ in range(v['hex']))
    s = ''
    for i in range(v['digits']):
        x = rng.int(10)
        while i == 0 and x == 0:
            x = rng.int(10)
        s += str(x)
    return s


def _bytes(s):
    return len(s.encode('utf-8'))


def _fill(t, key, val):
    return t.replace('{key}', key).replace('{value}', val)


# The longest prompt tasks.ts can draw (V8's string limit, MAX_SAMPLE_LENGTH there): past it the
# twins could not be compared, so it is refused here too.
MAX_SAMPLE_LENGTH = 536870888


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def min_sample_length(task):
    """The shortest length every sample of `task` fits (minSampleLength in tasks.ts)."""
    d = _task(task)
    value = '0' * (d['value'].get('digits') or d['value']['hex'])
    if d['filler'] == 'pairs':
        stand = '0' * d['key']['hex']
        return 1 + _bytes(_fill(d['question'], stand, '')) + _bytes(' ' + value) + _bytes(_fill(d['pair'], stand, value))
    if task == 'passkey':
        keys = [''] * d['needles']
    else:
        keys = sorted(SPEC['needleKeys'], key=_bytes, reverse=True)[:d['needles']]
    return 1 + sum(_bytes(_fill(d['needle'], k, value)) for k in keys) + _bytes(_fill(d['question'], keys[0], '')) + _bytes(' ' + value)


def _task(task):
    if not isinstance(task, str) or task not in SPEC['tasks']:
        raise ValueError(f"draw_sample: unknown task {task!r}; known: {', '.join(TASK_NAMES)}")
    return SPEC['tasks'][task]


def draw_sample(task, length, index, split='eval'):
    """Sample `index` of `task` at `length` tokens: dict(task, length, index, seed, prompt, answer)."""
    return draw_with_needles(task, length, index, split)[0]


def draw_with_needles(task, length, index, split='eval'):
    """draw_sample, plus every (question, answer) the context can answer (training asks several).

    A ValueError, as drawSample's ConfigError in tasks.ts, for an unknown task or split, an index that
    is not a non-negative integer, or a length that is not an integer in [min_sample_length(task),
    MAX_SAMPLE_LENGTH] (a short kv_lookup had no pair to ask; a huge one filled memory).
    """
    d = _task(task)
    lo = min_sample_length(task)
    if not _is_int(length) or not lo <= length <= MAX_SAMPLE_LENGTH:
        raise ValueError(f'draw_sample: length must be an integer in [{lo}, {MAX_SAMPLE_LENGTH}] for {task} (tokens, <bos> and answer included), got {length!r}')
    if not _is_int(index) or index < 0:
        raise ValueError(f'draw_sample: index must be a non-negative integer, got {index!r}')
    if split not in ('eval', 'train'):
        raise ValueError(f"draw_sample: split must be 'eval' or 'train', got {split!r}")
    seed = fnv1a32(f'{split}:{task}:{length}:{index}')
    rng = Mulberry32(seed)
    pieces, needles = [], []
    if d['filler'] == 'pairs':
        stand = '0' * d['key']['hex']
        room = length - 1 - _bytes(_fill(d['question'], stand, '')) - _bytes(' ' + '0' * d['value']['hex'])
        pair_bytes = _bytes(_fill(d['pair'], stand, '0' * d['value']['hex']))
        pairs = []
        while room >= pair_bytes:
            k = _value(rng, {'hex': d['key']['hex']})
            pairs.append((k, _value(rng, d['value'])))
            room -= pair_bytes
        k, v = pairs[rng.int(len(pairs))]
        pieces = [_fill(d['pair'], pk, pv) for pk, pv in pairs]
        known = [(_fill(d['question'], pk, ''), ' ' + pv) for pk, pv in pairs]
        question, answer = _fill(d['question'], k, ''), ' ' + v
    else:
        keys, values = [], []
        for _ in range(d['needles']):
            key = ''
            if task != 'passkey':
                key = SPEC['needleKeys'][rng.int(len(SPEC['needleKeys']))]
                while key in keys:
                    key = SPEC['needleKeys'][rng.int(len(SPEC['needleKeys']))]
            keys.append(key)
            values.append(_value(rng, d['value']))
        asked = rng.int(d['needles'])
        needles = [_fill(d['needle'], k, v) for k, v in zip(keys, values)]
        known = [(_fill(d['question'], k, ''), ' ' + v) for k, v in zip(keys, values)]
        question, answer = _fill(d['question'], keys[asked], ''), ' ' + values[asked]
        room = length - 1 - sum(_bytes(n) for n in needles) - _bytes(question) - _bytes(answer)
        if d['filler'] == 'repetitive':
            n = _bytes(SPEC['repetitiveFiller'])
            while room >= n:
                pieces.append(SPEC['repetitiveFiller'])
                room -= n
        else:
            w = SPEC['words']
            while True:
                s = f"{w['subjects'][rng.int(12)]} {w['verbs'][rng.int(12)]} {w['objects'][rng.int(12)]} {w['places'][rng.int(12)]}. "
                if _bytes(s) > room:
                    break
                pieces.append(s)
                room -= _bytes(s)
    depths = [rng.int(len(pieces) + 1) for _ in needles]
    out = []
    for p in range(len(pieces) + 1):
        out += [n for n, dp in zip(needles, depths) if dp == p]
        if p < len(pieces):
            out.append(pieces[p])
    sample = dict(task=task, length=length, index=index, seed=seed, prompt=''.join(out) + question, answer=answer)
    return sample, known


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description='Print samples as JSON lines.')
    ap.add_argument('--dump', nargs=3, metavar=('TASK', 'LENGTH', 'COUNT'), required=True)
    ap.add_argument('--split', default='eval')
    a = ap.parse_args()
    for i in range(int(a.dump[2])):
        print(json.dumps(draw_sample(a.dump[0], int(a.dump[1]), i, a.split)))
