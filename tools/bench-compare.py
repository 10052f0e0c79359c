#!/usr/bin/env python3
"""Compares divan bench binaries side by side: runs them interleaved for ROUNDS rounds with the given
filters and prints a Markdown table with, per row, each binary's best median over the rounds, the ratio
of the last to the first, and allocations per iteration.

usage: tools/bench-compare.py ROUNDS FILTER... -- NAME=BIN NAME=BIN
  e.g. (binaries from `cargo bench --bench engine --no-run` of two commits, copied aside):
  tools/bench-compare.py 15 established:: ftp:: seqadj:: -- before=/tmp/engine-old after=/tmp/engine-new
"""
import re, subprocess, sys
args = sys.argv[1:]
rounds = int(args[0]); i = args.index('--')
filters = args[1:i]; bins = [a.split('=', 1) for a in args[i+1:]]
unit = {'ns': 1, 'µs': 1e3, 'ms': 1e6, 's': 1e9, 'ps': 1e-3}
def parse(out):
    rows = {}; group = None; cur = None; want_alloc = False
    for line in out.splitlines():
        t = line.lstrip('│ ').strip()
        mm = re.match(r'^(?:[│ ]*)[├╰]─ (\S+)\s+([\d.]+) (\S+)\s+│\s+([\d.]+) (\S+)\s+│\s+([\d.]+) (\S+)', line)
        g = re.match(r'^[├╰]─ (\S+)\s+│\s+│', line)
        if g: group = g.group(1); continue
        if mm:
            name = (group + '::' if line.startswith(('│', ' ')) and group else '') + mm.group(1)
            if name == group: continue
            med = float(mm.group(6)) * unit[mm.group(7)]
            cur = name; rows[name] = [med, None]; want_alloc = False; continue
        if t.startswith('alloc:') and cur: want_alloc = True; continue
        if want_alloc and cur:
            n = re.match(r'^([\d.]+)', t)
            if n: rows[cur][1] = float(n.group(1))
            want_alloc = False
    return rows
res = {name: {} for name, _ in bins}
for r in range(rounds):
    for name, b in bins:
        out = subprocess.run([b, '--bench'] + filters, capture_output=True, text=True, timeout=900).stdout
        for k, (med, al) in parse(out).items():
            prev = res[name].get(k)
            res[name][k] = (min(med, prev[0]) if prev else med, al)
names = [n for n, _ in bins]
keys = sorted(set().union(*[set(v) for v in res.values()]))
print('| row | ' + ' | '.join(f'{n} median' for n in names) + ' | ratio | ' + ' | '.join(f'{n} allocs' for n in names) + ' |')
print('|---|' + '---|' * (2 * len(names) + 1))
for k in keys:
    meds = [res[n].get(k, (None, None))[0] for n in names]
    als = [res[n].get(k, (None, None))[1] for n in names]
    fmt = lambda v: '-' if v is None else (f'{v/1e3:.2f} µs' if v >= 1e3 else f'{v:.1f} ns')
    ratio = f'{meds[-1]/meds[0]:.3f}' if None not in meds and meds[0] else '-'
    print(f'| `{k}` | ' + ' | '.join(fmt(v) for v in meds) + f' | {ratio} | ' + ' | '.join('-' if a is None else f'{a:g}' for a in als) + ' |')
