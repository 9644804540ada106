# c = a b and db = a^T dc, each within one bf16 unit of the exact value
# (an f32 sum rounded once), where bf16 sums would be several units off.
import array, math, sys
out = lambda i: array.array('f', open(f'{sys.argv[1]}/out{i}.rank0.bin', 'rb').read())
a, b, dc, c, db = (out(i) for i in range(5))
assert (len(a), len(b), len(dc), len(c), len(db)) == (512, 64, 512, 512, 64)
def ulp(v):  # one bf16 unit at |v| (8 significant bits)
    return 2.0 ** (math.frexp(v)[1] - 8) if v else 2.0 ** -133
def check(name, got, exact, magnitude):
    # The f32 sum's own error is far below a bf16 unit of the terms' size.
    bad = [i for i, (g, e, m) in enumerate(zip(got, exact, magnitude))
           if abs(g - e) > ulp(e) + m * 2.0 ** -16]
    assert not bad, f'{name}: {len(bad)} elements off, first {bad[0]}: {got[bad[0]]} vs {exact[bad[0]]}'
rows = range(64); cols = range(8)
check('c', c, [sum(a[r * 8 + k] * b[k * 8 + n] for k in cols) for r in rows for n in cols],
      [sum(abs(a[r * 8 + k] * b[k * 8 + n]) for k in cols) for r in rows for n in cols])
check('db', db, [sum(a[r * 8 + k] * dc[r * 8 + n] for r in rows) for k in cols for n in cols],
      [sum(abs(a[r * 8 + k] * dc[r * 8 + n]) for r in rows) for k in cols for n in cols])
print('c and db within one bf16 unit')
