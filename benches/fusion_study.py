"""How much a fusion of stage 2's two branch scores can gain, measured on the
per-clip scores a stage-2 model writes (`scores.jsonl`, README "The demo's
science"). Plain Python, no dependencies.

    python3 benches/fusion_study.py demo/models/stage2/scores.jsonl

For the test split it prints the AUC (overall and per fake category) of: the
model's own fused score, each branch alone, fixed rules (mean, max of the
probabilities) and a logistic regression on the two branch logits fitted on
another split's clips: the validation split (held out from every training)
and, when the model was run with `recipe.report_train`, the training split
(in-sample for both branches, as the model's own gate sees it).
"""
import json, math, sys
from collections import defaultdict

SHORT = {"RealVideo-RealAudio": "RVRA", "RealVideo-FakeAudio": "RVFA", "FakeVideo-RealAudio": "FVRA",
         "FakeVideo-FakeAudio": "FVFA", "RealVideo-FakeAudio-VoiceClone": "VC",
         "RealVideo-FakeAudio-SelfVoiceClone": "SVC"}


def auc(pos, neg):
    if not pos or not neg:
        return float("nan")
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # Mann-Whitney with ties at half.
    r, i, rank_sum = 1, 0, 0.0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (r + r + (j - i) - 1) / 2
        rank_sum += mid * sum(1 for k in range(i, j) if ranked[k][1])
        r += j - i
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def logit(p):
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit_logreg(xs, ys, l2=1e-3, iters=50):
    """Newton's method on the mean log loss with a small ridge; xs rows get a bias."""
    d = len(xs[0]) + 1
    w = [0.0] * d
    for _ in range(iters):
        g = [0.0] * d
        h = [[0.0] * d for _ in range(d)]
        for x, y in zip(xs, ys):
            z = [1.0] + x
            p = 1 / (1 + math.exp(-max(min(sum(a * b for a, b in zip(w, z)), 30), -30)))
            for a in range(d):
                g[a] += (p - y) * z[a] / len(xs)
                for b in range(d):
                    h[a][b] += p * (1 - p) * z[a] * z[b] / len(xs)
        for a in range(d):
            g[a] += l2 * w[a]
            h[a][a] += l2
        w = [wi - si for wi, si in zip(w, solve(h, g))]
    return w


def solve(a, b):
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def features(c):
    return [logit(c["scores"]["audio"]), logit(c["scores"]["a2v"])]


def table(clips, score):
    real = [score(c) for c in clips if not c["label"]]
    row = {"overall": auc([score(c) for c in clips if c["label"]], real)}
    for cat in sorted({c["category"] for c in clips if c["label"]}):
        row[SHORT[cat]] = auc([score(c) for c in clips if c["category"] == cat], real)
    return row


def main(path):
    by = defaultdict(list)
    for line in open(path):
        c = json.loads(line)
        by[c["split"]].append(c)
    test = by["test"]
    rows = {
        "model's fused": lambda c: c["scores"]["final"],
        "audio only": lambda c: c["scores"]["audio"],
        "A2V only": lambda c: c["scores"]["a2v"],
        "mean": lambda c: (c["scores"]["audio"] + c["scores"]["a2v"]) / 2,
        "max": lambda c: max(c["scores"]["audio"], c["scores"]["a2v"]),
    }
    for split in ("validation", "train_in_sample"):
        if by[split]:
            w = fit_logreg([features(c) for c in by[split]], [1.0 if c["label"] else 0.0 for c in by[split]])
            rows[f"logreg fitted on {split}"] = (lambda w: lambda c: sum(a * b for a, b in zip(w, [1.0] + features(c))))(w)
            print(f"logreg on {split}: bias {w[0]:+.2f}, audio {w[1]:+.2f}, A2V {w[2]:+.2f}")
    out = {name: table(test, f) for name, f in rows.items()}
    cols = list(next(iter(out.values())).keys())
    print(f"test split ({sum(1 for c in test if not c['label'])} real, {sum(1 for c in test if c['label'])} fake clips)")
    print(f"{'score':32}" + "".join(f"{c:>9}" for c in cols))
    for name, row in out.items():
        print(f"{name:32}" + "".join(f"{row[c]:9.3f}" for c in cols))
    for split in ("train_in_sample", "validation", "test"):
        if by[split]:
            r = table(by[split], rows["audio only"])
            v = table(by[split], rows["A2V only"])
            print(f"{split:16} audio " + " ".join(f"{k} {x:.3f}" for k, x in r.items()))
            print(f"{split:16} A2V   " + " ".join(f"{k} {x:.3f}" for k, x in v.items()))
    print(json.dumps({"test": out}))


if __name__ == "__main__":
    main(sys.argv[1])
