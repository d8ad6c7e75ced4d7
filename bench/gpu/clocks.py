# The GPU's state while bench/gpu/run.ts timed its cases, from the samples scripts/gpu/bench.sh has
# nvidia-smi take every 0.5 s: so that a stretch of slow cases can be told apart from a slow build.
# NOTE: the grid at fd3e8c1 timed its first two cases (and their fp8 variants) 10-20 % slow, device
# tensors included, and every case after ~18 s as before (bench/NOTES.md v39): a lower SM clock in
# that stretch points at the card (its clocks), an unchanged one elsewhere (the host, the link).
# Usage: python3 bench/gpu/clocks.py SAMPLES.csv START   (START: epoch seconds when run.ts started)
import datetime
import statistics
import sys

FIELDS = ('sm', 'mem', 'power', 'temp')  # as bench.sh queries them, after the timestamp


def read(path, start):
    rows = []
    with open(path) as f:
        for line in f:
            parts = [p.strip() for p in line.split(',')]
            if len(parts) != 1 + len(FIELDS):
                continue
            try:
                t = datetime.datetime.strptime(parts[0], '%Y/%m/%d %H:%M:%S.%f').timestamp() - start
                rows.append((t, dict(zip(FIELDS, map(float, parts[1:])))))
            except ValueError:  # a field the card does not report ('[N/A]'), or a partial line
                continue
    return rows


def stretches(rows, slow):
    """[first, last] run.ts seconds of each run of consecutive samples for which slow(sample) holds."""
    out, cur = [], None
    for t, s in rows:
        if slow(s):
            cur = [t, t] if cur is None else [cur[0], t]
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: python3 bench/gpu/clocks.py SAMPLES.csv START')
    rows = [r for r in read(sys.argv[1], float(sys.argv[2])) if r[0] >= 0]
    if not rows:
        print('bench: no GPU clock samples (nvidia-smi gave none)')
        return
    sm = [s['sm'] for _, s in rows]
    top = max(sm)
    fmt = lambda spans: ', '.join(f'{a:.1f}-{b:.1f} s' for a, b in spans) or 'none'
    print(f"bench: GPU during run.ts ({len(rows)} samples, nvidia-smi every 0.5 s): SM clock "
          f"{min(sm):.0f} / {statistics.median(sm):.0f} / {top:.0f} MHz (min / median / max), memory clock "
          f"{min(s['mem'] for _, s in rows):.0f}-{max(s['mem'] for _, s in rows):.0f} MHz, power up to "
          f"{max(s['power'] for _, s in rows):.0f} W, up to {max(s['temp'] for _, s in rows):.0f} C")
    print(f"bench: SM clock below 95 % of its max at: {fmt(stretches(rows, lambda s: s['sm'] < 0.95 * top))}")


if __name__ == '__main__':
    main()
