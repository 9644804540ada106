# bf16 results computed in f32 and rounded once, against the exact values.
# Sums are within one bf16 unit (bf16 sums would be several units off),
# elementwise results within half a unit (correctly rounded up to f32's own
# error). Usage:
#   bf16-rounds-once.py matmul DIR: c = a b and db = a^T dc (bf16-matmul-gradient.mlir)
#   bf16-rounds-once.py bias DIR:   dbias = the column sums of dy (bf16-bias-gradient.mlir)
#   bf16-rounds-once.py silu DIR:   y = silu(x) and dx (bf16-silu.mlir)
import array, math, sys
kind, where = sys.argv[1], sys.argv[2]
out = lambda i: array.array('f', open(f'{where}/out{i}.rank0.bin', 'rb').read())

def ulp(v):  # one bf16 unit at |v| (8 significant bits)
    return 2.0 ** (math.frexp(v)[1] - 8) if v else 2.0 ** -133

def check(name, got, terms):
    # terms[i]: the products summed into element i. The f32 sum's own error
    # is far below a bf16 unit of the terms' size.
    exact = [sum(t) for t in terms]
    size = [sum(abs(x) for x in t) for t in terms]
    bad = [i for i, g in enumerate(got)
           if abs(g - exact[i]) > ulp(exact[i]) + size[i] * 2.0 ** -16]
    assert not bad, f'{name}: {len(bad)} of {len(got)} off, first {bad[0]}: {got[bad[0]]} vs {exact[bad[0]]}'

rows, cols = range(64), range(8)
if kind == 'matmul':
    a, b, dc, c, db = (out(i) for i in range(5))
    assert (len(a), len(b), len(dc), len(c), len(db)) == (512, 64, 512, 512, 64)
    check('c', c, [[a[r * 8 + k] * b[k * 8 + n] for k in cols] for r in rows for n in cols])
    check('db', db, [[a[r * 8 + k] * dc[r * 8 + n] for r in rows] for k in cols for n in cols])
    print('c and db within one bf16 unit')
elif kind == 'silu':
    x, dy, y, dx = (out(i) for i in range(4))
    assert (len(x), len(dy), len(y), len(dx)) == (512,) * 4
    sigmoid = [1 / (1 + math.exp(-v)) for v in x]
    exact = {'silu': [v * s for v, s in zip(x, sigmoid)],
             'its gradient': [d * s * (1 + v * (1 - s))
                              for v, d, s in zip(x, dy, sigmoid)]}
    for (name, want), got in zip(exact.items(), (y, dx)):
        bad = [i for i, g in enumerate(got)
               if abs(g - want[i]) > ulp(want[i]) / 2 + abs(want[i]) * 2.0 ** -20]
        assert not bad, f'{name}: {len(bad)} of 512 off, first {bad[0]}: {got[bad[0]]} vs {want[bad[0]]}'
    print('silu and its gradient within half a bf16 unit')
else:
    dy, dbias = out(0), out(1)
    assert (len(dy), len(dbias)) == (512, 8)
    check('dbias', dbias, [[dy[r * 8 + n] for r in rows] for n in cols])
    print('dbias within one bf16 unit')
