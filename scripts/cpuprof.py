#!/usr/bin/env python3
"""Self time per function of V8 CPU profiles (node --cpu-prof; SKV_PROFILE=1 scripts/gpu/eval.sh).

    python3 scripts/cpuprof.py <file.cpuprofile>... [--top 15]

A profile of a thread idle over 90 % of the time (a loader worker) is skipped.
"""
import argparse
import collections
import json

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument('files', nargs='+')
ap.add_argument('--top', type=int, default=15)
a = ap.parse_args()
for path in a.files:
    p = json.load(open(path))
    nodes = {n['id']: n['callFrame'] for n in p['nodes']}
    self_us = collections.Counter()
    for sample, dt in zip(p['samples'], p['timeDeltas']):
        cf = nodes[sample]
        self_us[(cf['functionName'] or '(anonymous)', cf['url'].split('/')[-1])] += dt
    total = sum(self_us.values())
    if self_us[('(idle)', '')] > 0.9 * total:
        continue
    print(f'{path}: {total / 1e6:.2f} s sampled')
    for (fn, url), us in self_us.most_common(a.top):
        print(f'  {us / 1e6:8.2f} s {100 * us / total:5.1f} %  {fn}  {url}')
