#!/usr/bin/env python3
"""Where a fleet's agent processes spend their samples: reads `perf script -F comm,pid,tid,ip,sym`
of a `perf record -a -g` and folds the samples of the processes named COMM (a build's file
name) by the outermost system call in their stack (`__x64_sys_*`), else a page fault, else the
first named frame; the driver (the process with the most samples) apart from the serves.

    perf script -i perf.data -F comm,pid,tid,ip,sym | python3 benches/perf_fold.py COMM [ROWS]
"""
import collections, re, sys

comm = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 25
samples, cur = [], None
for line in sys.stdin:
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = None
    elif not line[0].isspace():
        m = re.match(r"(.+?)\s+(\d+)/(\d+)", line.strip())
        cur = (m.group(1), int(m.group(2)), []) if m else None
    elif cur is not None:
        fields = line.split()
        if len(fields) >= 2:
            cur[2].append(fields[1])
if cur:
    samples.append(cur)
mine = [s for s in samples if s[0] == comm]
if not mine:
    sys.exit(f"no samples of {comm!r}")
driver = collections.Counter(s[1] for s in mine).most_common(1)[0][0]


def key(frames):
    calls = [f for f in frames if f.startswith(("__x64_sys_", "__do_sys_"))]
    if calls:
        return calls[-1].replace("__do_sys_", "__x64_sys_").split("+")[0]
    if any(f.startswith(("exc_page_fault", "asm_exc_page_fault")) for f in frames):
        return "page fault"
    named = [f for f in frames if not f.startswith("[") and "unknown" not in f]
    return named[0].split("+")[0][:60] if named else "?"


for who, sel in (("driver", [s for s in mine if s[1] == driver]),
                 ("serves", [s for s in mine if s[1] != driver])):
    folded = collections.Counter(key(s[2]) for s in sel)
    print(f"== {who}: {len(sel)} samples, {len(set(s[1] for s in sel))} processes")
    for k, v in folded.most_common(rows):
        print(f"{v:6d} {100 * v / max(len(sel), 1):5.1f}% {k}")
