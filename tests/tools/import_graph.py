#!/usr/bin/env python3
"""The import graph of src/ (ARCHITECTURE.md, "The arrows run one way").

Edges come from `use` trees and inline `crate::`/`super::` paths outside test
modules; a name a `mod.rs` re-exports counts as an edge to the module that
defines it. Prints the circles, the longest path and the glob imports between
a file and its siblings or parent. `--check` exits 1 on any circle or glob;
`-v` prints every edge.

usage: import_graph.py [SRC_DIR] [--check] [-v]"""
import os, re, sys, collections
args = [a for a in sys.argv[1:] if not a.startswith('-')]
root = args[0] if args else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3].split(os.sep)
            if rel[-1] in ('mod',): rel = rel[:-1]
            if rel == ['lib']: rel = []
            if rel == ['main']: continue
            files[tuple(rel)] = p

def strip_tests(text):
    # every #[cfg(test)] module, to its closing brace at column 0
    out = []; skip = False; lines = text.split('\n'); i = 0
    while i < len(lines):
        l = lines[i]
        if l.startswith('#[cfg(test)]') and i + 1 < len(lines) and re.match(r'^(pub(\([^)]*\))? )?mod \w+ \{', lines[i+1]):
            j = i + 2
            while j < len(lines) and lines[j] != '}': j += 1
            i = j + 1; continue
        out.append(l); i += 1
    return '\n'.join(out)

def strip_comments(text):
    text = re.sub(r'//[^\n]*', '', text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)

src = {m: strip_comments(strip_tests(open(p).read())) for m, p in files.items()}
mods = set(files)
# items defined per module and re-exports
defs = collections.defaultdict(set)
reexp = {}  # (mod, name) -> target path tuple
def parse_tree(s):
    """parse a use tree string into list of full paths (tuples); '*' kept."""
    s = re.sub(r'\s+', '', s)
    out = []
    def rec(prefix, s):
        # split top-level by commas
        depth = 0; parts = []; cur = ''
        for ch in s:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: parts.append(cur); cur = ''
            else: cur += ch
        if cur: parts.append(cur)
        for part in parts:
            if '{' in part:
                i = part.index('{')
                head = part[:i].rstrip(':')
                rec(prefix + [x for x in head.split('::') if x], part[i+1:part.rindex('}')])
            else:
                name = part.split(' as ')[0] if ' as ' in part else part
                name = re.sub(r'as\w+$', '', name) if False else name
                segs = [x for x in name.split('::') if x]
                alias = None
                m = re.match(r'(.*?)as(\w+)$', part)
                out.append((tuple(prefix + segs)))
    rec([], s)
    return out

def resolve(cur, path):
    path = list(path)
    if not path: return None
    if path[0] == 'crate': base = []; path = path[1:]
    elif path[0] == 'super':
        base = list(cur[:-1]); path = path[1:]
        while path and path[0] == 'super': base = base[:-1]; path = path[1:]
    elif path[0] == 'self': base = list(cur); path = path[1:]
    elif tuple(list(cur) + [path[0]]) in mods: base = list(cur)
    elif (path[0],) in mods and cur == (): base = []
    else: return None
    full = base + path
    # longest module prefix
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in mods:
            m = tuple(full[:k]); rest = full[k:]
            if rest and rest[0] != '*' and (m, rest[0]) in reexp:
                tgt = reexp[(m, rest[0])]
                if tgt != m: return tgt
            return m
    return None

uses = {}
for m, t in src.items():
    uses[m] = []
    for mt in re.finditer(r'(pub(\([^)]*\))?\s+)?use\s+([^;]+);', t):
        paths = parse_tree(mt.group(3))
        uses[m].append((bool(mt.group(1)), paths))
# re-exports: iterate to fixpoint
for _ in range(4):
    for m in mods:
        for pub, paths in uses[m]:
            if not pub: continue
            for p in paths:
                name = p[-1]
                if name == '*': continue
                mm = re.match(r'(.*)as(\w+)$', name)
                tgt = resolve(m, p[:-1] + (name,))
                if tgt is not None: reexp[(m, name)] = tgt

edges = collections.defaultdict(set)
globs = []
for m, t in src.items():
    for pub, paths in uses[m]:
        for p in paths:
            tgt = resolve(m, p)
            if tgt is None or tgt == m: continue
            if p[-1] == '*':
                # sibling or parent/child glob
                if tgt[:-1] == m[:-1] or tgt == m[:-1] or tgt[:-1] == m:
                    globs.append((m, p))
            edges[m].add(tgt)
    body = re.sub(r'(pub(\([^)]*\))?\s+)?use\s+[^;]+;', '', t)
    for mt in re.finditer(r'\b((?:crate|super)(?:::\w+)+)', body):
        tgt = resolve(m, tuple(mt.group(1).split('::')))
        if tgt is not None and tgt != m: edges[m].add(tgt)
    # inline child paths like scan::foo
    for mt in re.finditer(r'\b(\w+)::\w+', body):
        c = m + (mt.group(1),)
        if c in mods: edges[m].add(c)
# mod declarations are not imports
name = lambda m: '::'.join(m) or 'crate'
# SCCs (Tarjan)
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in sorted(mods): 
    if v not in idx: sc(v)
cyc = [s for s in sccs if len(s) > 1]
print('modules:', len(mods), 'edges:', sum(len(v) for v in edges.values()))
print('circles:', len(cyc))
for s in cyc: print('  ', ' , '.join(sorted(name(x) for x in s)))
# longest path on condensation
comp = {}
for i, s in enumerate(sccs):
    for v in s: comp[v] = i
memo = {}
def lp(i):
    if i in memo: return memo[i]
    best = [sccs[i][0]]
    for v in sccs[i]:
        for w in edges[v]:
            j = comp[w]
            if j != i:
                cand = lp(j)
                if len(cand) + 1 > len(best): best = [v] + cand
    memo[i] = best; return best
longest = max((lp(i) for i in range(len(sccs))), key=len)
print('longest path (%d modules): %s' % (len(longest), ' -> '.join(name(x) for x in longest)))
print('glob imports between siblings/parent:', len(globs))
for m, p in globs: print('  ', name(m), 'use', '::'.join(p))
if '--check' in sys.argv and (cyc or globs):
    sys.exit(1)
if '-v' in sys.argv:
    for m in sorted(edges): print(name(m), '->', ', '.join(sorted(name(x) for x in edges[m])))
