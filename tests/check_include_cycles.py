#!/usr/bin/env python3
"""Fails (TAP 'not ok') when the modules of src/ and tools/ (the programs'
own modules, e.g. pactfs-keyd's keyd_*) include each other in a cycle.  A module is a .c file and its .h (x.c + x.h = module x); a header
with no .c of its name belongs to the module named by its longest prefix
before an underscore that has a .c (meta_backend.h is part of meta), else it
is its own module.  x depends on y when any file of x includes "y.h".  The
dependency direction must stay one way (docs/design.md, module map).

KNOWN lists the cycles that exist today, each with the reason and the plan;
any other cycle fails.  A known cycle that is gone is reported so the entry
can be removed."""
import os, re, sys

top = os.environ.get("srcdir", os.path.join(os.path.dirname(__file__), ".."))
dirs = [os.path.join(top, d) for d in ("src", "tools")]
inc = re.compile(r'^\s*#\s*include\s+"([^"/]+)\.h"', re.M)
KNOWN = {
    # grants.c holds both the grant signature (grant_sign/grant_verify, used
    # by vault.c while opening envelopes) and the grant/revoke operations on
    # an open vault; the signature part moves to its own module below vault
    # (issue 14) once the concurrent work on grants.c has landed.  cosign
    # (two-sysadmin role changes) is an operation on an open vault that
    # grants' role change calls, so it sits in the same component until the
    # split: cosign -> vault -> grants -> cosign.
    ("cosign", "grants", "vault"),
}

paths = {f: os.path.join(d, f) for d in dirs for f in os.listdir(d) if f.endswith((".c", ".h"))}
files = sorted(paths)
names = {os.path.splitext(f)[0] for f in files}
with_c = {os.path.splitext(f)[0] for f in files if f.endswith(".c")}

def module(name):
    if name in with_c:
        return name
    parts = name.split("_")
    for i in range(len(parts) - 1, 0, -1):
        if "_".join(parts[:i]) in with_c:
            return "_".join(parts[:i])
    return name

mods = {module(n) for n in names}
deps = {m: set() for m in mods}
for f in files:
    m = module(os.path.splitext(f)[0])
    with open(paths[f], encoding="utf-8", errors="replace") as fh:
        for d in inc.findall(fh.read()):
            if d in names and module(d) != m:
                deps[m].add(module(d))

# Tarjan's strongly connected components: any component of 2+ is a cycle.
index, low, stack, on, cycles, n = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in sorted(deps[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            cycles.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(mods):
    if v not in index:
        visit(v)
print("1..1")
found = {tuple(c) for c in cycles}
for k in sorted(KNOWN - found):
    print("# the known cycle %s is gone: remove it from KNOWN in %s" % (" <-> ".join(k), __file__))
cycles = [c for c in cycles if tuple(c) not in KNOWN]
if cycles:
    for c in cycles:
        print("# include cycle between modules: " + ", ".join(c))
        for a in c:
            print("#   %s includes %s" % (a, ", ".join(sorted(deps[a] & set(c)))))
    print("not ok 1 - modules include each other in a cycle; move the shared part "
          "into a lower module (docs/design.md, module map)")
    sys.exit(1)
print("ok 1 - no include cycle between the %d modules of src/ and tools/ (known: %s)"
      % (len(mods), ", ".join(" <-> ".join(k) for k in sorted(found & KNOWN)) or "none"))
