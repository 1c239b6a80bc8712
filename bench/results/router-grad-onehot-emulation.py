# Session 13: why v7c failed layer_test's OneExpert case (drouter relative error 2.5e15 on the H200), emulated
# here on the CPU in float32 (no fma): python3 bench/results/router-grad-onehot-emulation.py. Output:
#   warp 1.93e-06, regrouped 6e+16, fixed 1.93e-06 (relative Frobenius error against float64; |ref| 3.9e-27)
# float32 emulation of RouterGrad's dlogits for one token under OneExpert logits (bias 64 on one expert),
# three groupings, against float64; K = 2, E = 4, P = 0, z = 0, lbl as the layer (weight 0.01).
import numpy as np
rng = np.random.default_rng(1)
E, K, T = 4, 2, 200
f = np.float32
errs = {'warp': [], 'regrouped': [], 'fixed': []}
ref_all, out = [], {k: [] for k in errs}
counts = np.zeros(E); counts[2] = T; counts[np.arange(E) != 2] = 0
for t in range(T):
    logits = rng.normal(size=E) * 0.5; logits[2] += 64
    counts_t = counts.copy()
    lblw = 0.01; lbl = 1.0 * lblw * E / (T * K * T)
    # selection: top-2
    ids = np.argsort(-logits, kind='stable')[:K]
    dw = rng.uniform(-1, 1, size=K)
    # fp64 reference
    p = np.exp(logits - logits.max()); p /= p.sum()
    g = lbl * counts_t.copy()
    for k in range(K): g[ids[k]] += dw[k]
    ref = p * (g - (p * g).sum())
    ref_all.append(ref)
    # fp32 pieces
    lf = logits.astype(f); m = lf.max(); x = np.exp(lf - m).astype(f); s = f(x.sum(dtype=f)); inv = f(f(1) / s)
    pf = (x * inv).astype(f)
    lblc = (f(lbl) * counts_t.astype(f)).astype(f)
    adj = dw.astype(f)
    ps = np.array([pf[i] for i in ids], dtype=f)
    gf = lblc.copy()
    for k in range(K): gf[ids[k]] = f(gf[ids[k]] + adj[k])
    # warp: dot = sum p*g ; v = p*(g - dot)
    dot_w = f(0)
    for e in range(E): dot_w = f(dot_w + f(pf[e] * gf[e]))
    out['warp'].append(np.array([f(pf[e] * f(gf[e] - dot_w)) for e in range(E)]))
    # dot as sum p*lbl then + ps*adj (v7c and fixed)
    dot_s = f(0)
    for e in range(E): dot_s = f(dot_s + f(pf[e] * lblc[e]))
    for k in range(K): dot_s = f(dot_s + f(ps[k] * adj[k]))
    # regrouped (v7c as run): p*(lbl - dot + zc) + p*adj at selected
    v = np.array([f(pf[e] * f(lblc[e] - dot_s)) for e in range(E)])
    for k in range(K): v[ids[k]] = f(v[ids[k]] + f(ps[k] * adj[k]))
    out['regrouped'].append(v)
    # fixed: g formed per element, p*(g - dot)
    out['fixed'].append(np.array([f(pf[e] * f(gf[e] - dot_s)) for e in range(E)]))
R = np.array(ref_all)
for k, v in out.items():
    V = np.array(v, dtype=np.float64)
    print(k, 'relative Frobenius error %.3g' % (np.linalg.norm(V - R) / np.linalg.norm(R)), ' |ref| %.3g' % np.linalg.norm(R))
