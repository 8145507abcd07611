"""Shares of a profile's samples per innermost pactfs function.

Reads `perf script` output (with call graphs) on standard input; each
sample counts for the innermost frame that lies in a pactfs binary, so
system calls, page faults and library code count for the pactfs function
that made them ("?" when no pactfs frame is on the stack: libfuse's
request loop).  Usage: perf script -i F | python3 perf_shares.py [N]
"""
import collections
import sys


def main():
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    counts = collections.Counter()
    total = 0
    for sample in sys.stdin.read().split('\n\n'):
        lines = [l.strip() for l in sample.strip().split('\n') if l.strip()]
        if len(lines) < 2:
            continue
        total += 1
        owner = '?'
        for frame in lines[1:]:
            parts = frame.split(None, 1)
            if len(parts) == 2 and 'pactfs' in parts[1].rsplit('(', 1)[-1]:
                owner = parts[1].split(' (')[0].split('+0x')[0]
                break
        counts[owner] += 1
    if not total:
        sys.exit('perf_shares.py: no samples (was perf record run with -g?)')
    print('%d samples; share per innermost pactfs function:' % total)
    for name, n in counts.most_common(top):
        print('%6.2f %%  %s' % (100.0 * n / total, name))


if __name__ == '__main__':
    main()
