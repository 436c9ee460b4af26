"""A slow, obviously-correct dependency graph: a dict of dicts and a reachability search."""


class NaiveGraph:
    def __init__(self):
        self.out = {}  # parent -> {child: kind}

    def reaches(self, a, b):
        """Whether a path of edges leads from a to b (a reaches itself)."""
        seen, todo = {a}, [a]
        while todo:
            v = todo.pop()
            if v == b:
                return True
            for w in self.out.get(v, {}):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return False

    def add(self, p, c, kind):
        """'added', 'exists' (same kind), 'clash' (other kind) or 'cycle'."""
        if c in self.out.get(p, {}):
            return "exists" if self.out[p][c] == kind else "clash"
        if self.reaches(c, p):
            return "cycle"
        self.out.setdefault(p, {})[c] = kind
        return "added"

    def remove(self, p, c):
        if c not in self.out.get(p, {}):
            return False
        del self.out[p][c]
        return True

    def remove_node(self, s):
        n = len(self.out.pop(s, {}))
        for kids in self.out.values():
            if s in kids:
                del kids[s]
                n += 1
        return n

    def edges(self):
        return sorted((p, c, k) for p, kids in self.out.items() for c, k in kids.items())

    def children(self, s, kind=None):
        return sorted(c for c, k in self.out.get(s, {}).items() if kind is None or k == kind)

    def parents(self, s, kind=None):
        return sorted(p for p, c, k in self.edges() if c == s and (kind is None or k == kind))

    def levels(self, n):
        """Longest path ending at each slot below n, by relaxing every edge until nothing moves."""
        lev = [0] * n
        changed = True
        while changed:
            changed = False
            for p, c, _ in self.edges():
                if lev[c] < lev[p] + 1:
                    lev[c] = lev[p] + 1
                    changed = True
        return lev
