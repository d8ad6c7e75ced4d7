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


def draw_sample(task, length, index, split='eval'):
    """Sample `index` of `task` at `length` tokens: dict(task, length, index, seed, prompt, answer)."""
    return draw_with_needles(task, length, index, split)[0]


def draw_with_needles(task, length, index, split='eval'):
    """draw_sample, plus every (question, answer) the context can answer (training asks several)."""
    d = SPEC['tasks'][task]
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
