"""How many radix passes the select's exact top-k takes (kernels/select.cuh, cluster_select_top) with
digits of 8 bits, against a wider first digit: a model of its prefix / want / taken-whole exit over
the 64-bit keys (score rank << 32 | index), on scores like the step's (the max over 4 query heads of
their softmax over 16K landmark logits, N(0, sigma)), top 256. Checks every digit plan's threshold
against a sort. Usage: python3 bench/gpu/radix_passes.py [trials]   (bench/NOTES.md v59)"""
import math, random, struct, sys


def rank(s):
    if s != s:
        return 0xFFFFFFFF
    u = 0 if s == 0.0 else struct.unpack('<I', struct.pack('<f', s))[0]
    mono = (~u & 0xFFFFFFFF) if u & 0x80000000 else (u | 0x80000000)
    return ~mono & 0xFFFFFFFF  # largest first


def digits(first):
    plan, shift = [(64 - first, first)], 64 - first
    while shift > 0:
        bits = min(8, shift)
        shift -= bits
        plan.append((shift, bits))
    return plan


def threshold(keys, m, plan):
    prefix = mask = 0
    want, passes = m, 0
    for shift, bits in plan:
        hist = [0] * (1 << bits)
        for k in keys:
            if k & mask == prefix:
                hist[(k >> shift) & ((1 << bits) - 1)] += 1
        passes += 1
        below = 0
        for b, c in enumerate(hist):
            if below + c >= want:
                prefix |= b << shift
                mask |= ((1 << bits) - 1) << shift
                want -= below
                if c == want:  # the bin taken whole: the prefix's last key is the threshold
                    prefix |= (1 << shift) - 1
                    want = 0
                break
            below += c
        if want == 0:
            return prefix, passes
    return prefix, passes


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rng = random.Random(7)
    n, m, firsts = 16384, 256, (8, 9, 10, 11, 12, 16)
    passes = {w: [] for w in firsts}
    for _ in range(trials):
        sigma = rng.choice([1.0, 2.0, 3.0, 5.0])
        heads = []
        for _ in range(4):
            logits = [rng.gauss(0, sigma) for _ in range(n)]
            top = max(logits)
            total = sum(math.exp(x - top) for x in logits)
            heads.append([math.exp(x - top) / total for x in logits])
        scores = [struct.unpack('<f', struct.pack('<f', max(h[i] for h in heads)))[0] for i in range(n)]
        keys = [rank(s) << 32 | i for i, s in enumerate(scores)]
        ordered = sorted(keys)
        for w in firsts:
            kth, p = threshold(keys, m, digits(w))
            assert ordered[m - 1] <= kth < ordered[m], w  # exactly the top m keys lie at or below it
            passes[w].append(p)
    for w in firsts:
        v = passes[w]
        print(f"first digit {w:2d} bits: {sum(v) / len(v):.2f} passes on average ({min(v)}-{max(v)}), {len(v)} selections")


if __name__ == '__main__':
    main()
