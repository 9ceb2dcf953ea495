"""Why stage 2's A2V branch did not learn on the demo, measured (README,
"Why the A2V branch did not learn"). Reads a workspace's element set and
stage-1 model; needs only PyTorch (the venv scripts/setup.sh makes).

    PY=~/.cache/avdfd-pipeline/torch-2.11.0/bin/python
    $PY benches/a2v_study.py data   demo/data/elements
    $PY benches/a2v_study.py probes demo/data/elements demo/models/stage1/model.safetensors
    $PY benches/a2v_study.py sync   demo/data/elements demo/models/stage1/model.safetensors \
        [--tokens patch|frame] [--align interpolate|frame_times] [--standardise] [--dropout P]

`data`: is lip sync visible in the elements? The mouth opening of each sampled
frame (pixels of the mouth's interior colour) against the audio's loudness at
that frame's time (plus a lag), the AUC of their per-clip correlation as a
detector, and the correlation the reference's token interpolation achieves.
`probes`: what reaches the predictor (audio tokens: their loudness, linearly)
and what it must predict (how much of a mouth token's variance is the mouth).
`sync`: stage 2's A2V branch alone on a pure sync task: in-sync clips
(RVRA, and the voice clones, which keep the timing) against the same clips
with their 16 frames reversed in time (same frames, same audio, only the
pairing differs); AUC of the A2V score on the validation identities.
"""
import argparse, json, math, os, struct, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

DT = {"F32": torch.float32, "U8": torch.uint8}
SHORT = {"RealVideo-RealAudio": "RVRA", "RealVideo-FakeAudio": "RVFA", "FakeVideo-RealAudio": "FVRA",
         "FakeVideo-FakeAudio": "FVFA", "RealVideo-FakeAudio-VoiceClone": "VC",
         "RealVideo-FakeAudio-SelfVoiceClone": "SVC"}
HOP = 64 / 16000
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
IN_SYNC = ["RealVideo-RealAudio", "RealVideo-FakeAudio-VoiceClone", "RealVideo-FakeAudio-SelfVoiceClone"]


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    return {k: torch.frombuffer(bytearray(data[v["data_offsets"][0]:v["data_offsets"][1]]),
                                dtype=DT[v["dtype"]]).reshape(v["shape"])
            for k, v in h.items() if k != "__metadata__"}


def load(d):
    rows = [json.loads(l) for l in open(os.path.join(d, "manifest.jsonl")) if l.strip()]
    shards = {r["shard"]: read_st(os.path.join(d, r["shard"])) for r in rows}
    mel = torch.stack([shards[r["shard"]]["mel"][r["index"]] for r in rows])
    frames = torch.stack([shards[r["shard"]]["frames"][r["index"]] for r in rows])
    times = torch.tensor([r["frame_times"] for r in rows], dtype=torch.float32)
    return rows, mel, frames, times


def auc(scores, labels):
    s = torch.as_tensor(scores, dtype=torch.float64)
    l = torch.as_tensor(labels, dtype=torch.bool)
    pos, neg = s[l], s[~l]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return ((pos[:, None] > neg[None]).double().sum() + 0.5 * (pos[:, None] == neg[None]).double().sum()).item() / (len(pos) * len(neg))


def corr_rows(x, y):
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1) + 1e-9)


def mouth_opening(frames):
    """Pixels of the mouth's interior colour in the lower half of each frame."""
    f = frames.float()
    s = f.shape[2]
    return ((f - torch.tensor([48.0, 14.0, 22.0])).norm(dim=-1) < 40).float()[:, :, s // 2:].sum((2, 3))


def loudness_at(mel, times):
    """Mean z-scored log-mel over +-20 ms around each time."""
    loud = mel.mean(1)
    c = (times / HOP).round().long().clamp(5, loud.shape[1] - 6)
    return torch.stack([loud.gather(1, (c + d)) for d in range(-5, 6)]).mean(0)


def cmd_data(a):
    rows, mel, frames, times = load(a.elements)
    m = mouth_opening(frames)
    print("correlation of mouth opening with loudness at the frame's time + lag (all frames of all clips):")
    for lag in (-0.08, -0.04, 0.0, 0.04, 0.08, 0.12):
        l = loudness_at(mel, times + lag)
        c = torch.corrcoef(torch.stack([m.flatten(), l.flatten()]))[0, 1]
        print(f"  lag {lag * 1000:+4.0f} ms: {c:.3f}")
    r = corr_rows(m, loudness_at(mel, times + 0.04))
    real = [i for i, x in enumerate(rows) if x["category"] == "RealVideo-RealAudio"]
    print("per-clip correlation (lag +40 ms) as a detector, AUC per fake category against RVRA:")
    for c, name in SHORT.items():
        fake = [i for i, x in enumerate(rows) if x["category"] == c]
        if c != "RealVideo-RealAudio" and fake:
            print(f"  {name}: mean r {r[fake].mean():.3f} (RVRA {r[real].mean():.3f}), AUC {auc((-r[fake + real]).tolist(), [1] * len(fake) + [0] * len(real)):.3f}")
    # The reference aligns audio to visual tokens by interpolating the audio
    # along the flattened (time-major) token axis; what does a mouth token get?
    n_tok, per_slice = 8 * 36, 36
    interp = F.interpolate(mel[real].mean(1, keepdim=True), size=n_tok, mode="linear", align_corners=False)[:, 0]
    mouth_slice = m[real].view(len(real), 8, 2).mean(2)
    print("reference interpolation: correlation of the audio at the mouth token (row 4, column 2 of 6x6) with that tubelet's mouth:")
    cs = []
    for t in range(8):
        a_t = interp[:, t * per_slice + 26]
        cs.append(torch.corrcoef(torch.stack([a_t, mouth_slice[:, t]]))[0, 1].item())
    print("  per tubelet:", " ".join(f"{c:+.2f}" for c in cs))


class MelEncoder(nn.Module):
    def __init__(self, d, patch_len, layers, nhead, ff, dropout):
        super().__init__()
        self.pl = patch_len
        self.patch_proj = nn.Linear(128 * patch_len, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, 768 // patch_len, d))
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, nhead, ff, dropout, batch_first=True), layers, enable_nested_tensor=False)

    def forward(self, mel):
        b, m, t = mel.shape
        x = mel.view(b, m, t // self.pl, self.pl).permute(0, 2, 1, 3).reshape(b, t // self.pl, m * self.pl)
        tok = self.encoder(self.patch_proj(x) + self.pos_emb)
        return tok, tok.mean(1)


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        q, k, v = F.linear(self.norm1(x), self.qkv.weight, bias).reshape(b, n, 3, self.h, -1).permute(2, 0, 3, 1, 4)
        x = x + self.proj(((q * (c // self.h) ** -0.5) @ k.transpose(-2, -1)).softmax(-1).matmul(v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sincos(n, d):
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(d)[None]
    ang = pos / torch.pow(10000.0, (2 * (i // 2)).double() / d)
    return torch.where(i % 2 == 0, torch.sin(ang), torch.cos(ang)).float()[None]


class Detector(nn.Module):
    """The demo-size AVDetector (MODELS.md) with the A2V discrepancy's switches."""

    def __init__(self, a, img):
        super().__init__()
        d, p = 64, a.dropout
        self.a = a
        self.audio_enc = MelEncoder(d, 16, 2, 4, 128, 0.3)
        self.patch = nn.Conv3d(3, d, (2, 16, 16), (2, 16, 16))
        self.register_buffer("pos", sincos((img // 16) ** 2 * 8, d))
        self.blocks = nn.ModuleList([Block(d, 4) for _ in range(2)])
        self.norm = nn.LayerNorm(d)
        self.vproj = nn.Linear(d, d)
        self.pred = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 4, 128, p, batch_first=True), 2, enable_nested_tensor=False)
        self.to_frame = nn.Linear(d, d)
        self.a2v_head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(p), nn.Linear(d, 1))
        for q in self.audio_enc.parameters():
            q.requires_grad_(False)

    def forward(self, mel, clip, times):
        self.audio_enc.eval()
        with torch.no_grad():
            tok, _ = self.audio_enc(mel)
        x = self.patch(clip.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = blk(x)
        v, g = self.vproj(self.norm(x)), self.vproj(self.norm(x.mean(1)))
        b, n, d = v.shape
        if self.a.align == "interpolate":
            steps = 8 if self.a.tokens == "frame" else n
            al = F.interpolate(tok.transpose(1, 2), size=steps, mode="linear", align_corners=False).transpose(1, 2)
        else:
            coord = (((times + 0.04) / HOP - 7.5) / 16).clamp(0, tok.shape[1] - 1)
            lo = coord.floor().long()
            hi = (lo + 1).clamp(max=tok.shape[1] - 1)
            fr = (coord - lo)[..., None]
            pick = lambda i: tok.gather(1, i[..., None].expand(-1, -1, d))
            al = (pick(lo) * (1 - fr) + pick(hi) * fr).view(b, 8, 2, d).mean(2)
            if self.a.tokens == "patch":
                al = al.repeat_interleave(n // 8, 1)
        if self.a.tokens == "frame":
            v = v.view(b, 8, -1, d).mean(2)
        pred = self.to_frame(self.pred(torch.cat([g[:, None], al], 1))[:, 1:])
        if self.a.standardise:
            z = lambda t: ((t.view(b, 8, -1, d) - t.view(b, 8, -1, d).mean(1, keepdim=True)) / (t.view(b, 8, -1, d).std(1, keepdim=True) + 1e-4)).view(b, -1, d)
            pred, v = z(pred), z(v)
        logit = self.a2v_head(torch.cat([(pred - v).abs().amax(1), g], 1)).squeeze(-1)
        return logit, ((pred - v) ** 2).mean((1, 2))


def audio_encoder(stage1):
    enc = MelEncoder(64, 16, 2, 4, 128, 0.3)
    w = read_st(stage1)
    enc.load_state_dict({k[len("audio_enc."):]: v for k, v in w.items() if k.startswith("audio_enc.")})
    return enc.eval()


def cmd_probes(a):
    rows, mel, frames, times = load(a.elements)
    tr = torch.tensor([r["split"] == "train" for r in rows])
    with torch.no_grad():
        tok, _ = audio_encoder(a.stage1)(mel)
    target = mel.mean(1).view(len(rows), tok.shape[1], -1).mean(2)

    def r2(X, y):
        Xt, Xv = X[tr].reshape(-1, X.shape[-1]), X[~tr].reshape(-1, X.shape[-1])
        mu, sd = Xt.mean(0), Xt.std(0) + 1e-6
        aug = lambda Z: torch.cat([(Z - mu) / sd, torch.ones(len(Z), 1)], 1)
        w = torch.linalg.solve(aug(Xt).T @ aug(Xt) + 1e-2 * torch.eye(Xt.shape[1] + 1), aug(Xt).T @ y[tr].reshape(-1))
        yv = y[~tr].reshape(-1)
        return 1 - ((aug(Xv) @ w - yv) ** 2).mean() / yv.var()

    print(f"audio: R^2 of each stage-1 token's loudness from the token (linear, held-out identities): {r2(tok, target):.3f}")
    torch.manual_seed(0)
    real = [i for i, r in enumerate(rows) if r["category"] == "RealVideo-RealAudio"]
    det = Detector(argparse.Namespace(dropout=0.0, align="interpolate", tokens="patch", standardise=False), frames.shape[2])
    with torch.no_grad():
        clip = ((frames[real].permute(0, 1, 4, 2, 3).float() / 255 - MEAN) / STD)
        x = det.patch(clip.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2) + det.pos
        for blk in det.blocks:
            x = blk(x)
        v = det.norm(x).view(len(real), 8, -1, 64)
    mouth = mouth_opening(frames[real]).view(len(real), 8, 2).mean(2)
    for j in (26, 27):
        y = v[:, :, j]
        within = y - y.mean(1, keepdim=True)
        m = (mouth - mouth.mean(1, keepdim=True)).reshape(-1, 1)
        beta = (m * within.reshape(-1, 64)).sum(0) / (m ** 2).sum()
        explained = within.reshape(-1, 64).var(0).sum() - (within.reshape(-1, 64) - m * beta).var(0).sum()
        print(f"visual token {j} (mouth row), random-init backbone: variance {y.reshape(-1, 64).var(0).sum():.2f}, "
              f"of which within the clip {within.reshape(-1, 64).var(0).sum():.2f}, explained by the mouth opening {explained:.2f}")


def cmd_sync(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows, mel, frames, times = load(a.elements)
    base = [i for i, r in enumerate(rows) if r["category"] in IN_SYNC]
    train = [i for i in base if rows[i]["split"] == "train"]
    val = [i for i in base if rows[i]["split"] != "train"]
    fvra = [i for i, r in enumerate(rows) if r["category"] == "FakeVideo-RealAudio"]
    if a.against_fvra:
        # In-sync clips against the corpus's own out-of-sync ones, unreversed.
        train = train + [i for i in fvra if rows[i]["split"] == "train"]
        val = val + [i for i in fvra if rows[i]["split"] != "train"]
    det = Detector(a, frames.shape[2])
    w = read_st(a.stage1)
    det.audio_enc.load_state_dict({k[len("audio_enc."):]: v for k, v in w.items() if k.startswith("audio_enc.")})
    params = [p for p in det.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.1)

    def clips(b, reverse):
        f = frames[b].permute(0, 1, 4, 2, 3).float() / 255
        f = torch.where(reverse.view(-1, 1, 1, 1, 1), f.flip(1), f)
        return (f - MEAN) / STD

    g = torch.Generator().manual_seed(a.seed)
    print(f"sync task: {len(train)} training clips, {len(val)} held-out; tokens {a.tokens}, align {a.align}, "
          f"standardise {a.standardise}, dropout {a.dropout}")
    t0 = time.time()
    for ep in range(a.epochs):
        det.train()
        for gr in opt.param_groups:
            gr["lr"] = 3e-4 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * ep / a.epochs)))
        perm = torch.tensor(train)[torch.randperm(len(train), generator=g)].tolist()
        for k in range(0, len(perm), 8):
            b = perm[k:k + 8]
            if a.against_fvra:
                rev = torch.zeros(len(b), dtype=torch.bool)
                y = torch.tensor([float(rows[i]["category"] == "FakeVideo-RealAudio") for i in b])
            else:
                rev = torch.rand(len(b), generator=g) < 0.5
                y = rev.float()
            logit, mse = det(mel[b], clips(b, rev), times[b])
            loss = F.binary_cross_entropy_with_logits(logit, y) + 0.5 * torch.where(y > 0, F.relu(0.5 - mse), mse).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        det.eval()
        s, l = [], []
        with torch.no_grad():
            for rev in ((False,) if a.against_fvra else (False, True)):
                for k in range(0, len(val), 32):
                    b = val[k:k + 32]
                    s += det(mel[b], clips(b, torch.full((len(b),), rev)), times[b])[0].tolist()
                    l += [int(rev or rows[i]["category"] == "FakeVideo-RealAudio") for i in b]
        print(f"  epoch {ep}: held-out sync AUC {auc(s, l):.3f} ({time.time() - t0:.0f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("elements")
    p = sub.add_parser("probes")
    p.add_argument("elements")
    p.add_argument("stage1")
    s = sub.add_parser("sync")
    s.add_argument("elements")
    s.add_argument("stage1")
    s.add_argument("--tokens", choices=["patch", "frame"], default="patch")
    s.add_argument("--align", choices=["interpolate", "frame_times"], default="interpolate")
    s.add_argument("--standardise", action="store_true")
    s.add_argument("--dropout", type=float, default=0.3)
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--against-fvra", action="store_true",
                   help="in-sync clips against the set's FakeVideo-RealAudio clips instead of time-reversed ones")
    a = ap.parse_args()
    {"data": cmd_data, "probes": cmd_probes, "sync": cmd_sync}[a.cmd](a)


if __name__ == "__main__":
    main()
