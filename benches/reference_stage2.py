"""Stage-2 training-step timing in PyTorch, for comparison with
`pipeline bench models` (same configuration file, batch, steps, threads).

A re-implementation of the reference AVDetector's structure from MODELS.md,
including the reference's second backbone pass (sequence and pooled features
computed by two full MARLIN forwards); run with --single-pass to time the
PyTorch model without it. Usage:
    python benches/reference_stage2.py config/demo/stage2.json --batch 2 --steps 5
"""
import argparse, json, math, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MelEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        c = {"n_mels": 128, "t_pad": 768, **c}
        self.c = c
        n = c["t_pad"] // c["patch_len"]
        self.patch_proj = nn.Linear(c["n_mels"] * c["patch_len"], c["d_model"])
        self.pos_emb = nn.Parameter(torch.randn(1, n, c["d_model"]) * 0.02)
        layer = nn.TransformerEncoderLayer(c["d_model"], c["nhead"], c["dim_feedforward"], c["dropout"], batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)

    def forward(self, mel):
        b, m, t = mel.shape
        pl = self.c["patch_len"]
        x = mel.view(b, m, t // pl, pl).permute(0, 2, 1, 3).reshape(b, t // pl, m * pl)
        tok = self.encoder(self.patch_proj(x) + self.pos_emb)
        return tok, tok.mean(1)


class Block(nn.Module):
    def __init__(self, d, h, r):
        super().__init__()
        self.h = h
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(d))
        self.v_bias = nn.Parameter(torch.zeros(d))
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, int(d * r))
        self.fc2 = nn.Linear(int(d * r), d)

    def forward(self, x):
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(self.norm1(x), self.qkv.weight, bias).reshape(b, n, 3, self.h, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * (c // self.h) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Marlin(nn.Module):
    def __init__(self, v):
        super().__init__()
        d = v["embed_dim"]
        n = (v["img_size"] // v["patch_size"]) ** 2 * (v["n_frames"] // v["tubelet_size"])
        self.proj = nn.Conv3d(3, d, (v["tubelet_size"], v["patch_size"], v["patch_size"]), (v["tubelet_size"], v["patch_size"], v["patch_size"]))
        self.register_buffer("pos", torch.zeros(1, n, d))
        self.blocks = nn.ModuleList([Block(d, v["num_heads"], v["mlp_ratio"]) for _ in range(v["depth"])])
        self.norm = nn.LayerNorm(d)

    def extract(self, x, pool):
        x = self.proj(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x.mean(1) if pool else x)


class AVDetector(nn.Module):
    def __init__(self, m, single_pass):
        super().__init__()
        d = m["audio"]["d_model"]
        self.single = single_pass
        self.audio_enc = MelEncoder(m["audio"])
        self.backbone = Marlin(m["visual_backbone"])
        self.vproj = nn.Linear(m["visual_backbone"]["embed_dim"], d)
        layer = nn.TransformerEncoderLayer(d, m["a2v_nhead"], m["predictor_dim_feedforward"], m["dropout"], batch_first=True)
        self.pred = nn.TransformerEncoder(layer, m["a2v_layers"], enable_nested_tensor=False)
        self.to_frame = nn.Linear(d, d)
        self.audio_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(m["dropout"]), nn.Linear(d, 1))
        self.a2v_head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(m["dropout"]), nn.Linear(d, 1))
        self.conf = nn.Sequential(nn.Linear(3 * d + 2, d), nn.ReLU(), nn.Dropout(m["dropout"]), nn.Linear(d, 2))
        for p in list(self.audio_enc.parameters()) + list(self.audio_head.parameters()):
            p.requires_grad_(False)

    def forward(self, mel, clip):
        with torch.no_grad():
            self.audio_enc.eval()
            tok, feat = self.audio_enc(mel)
            la = self.audio_head(feat).squeeze(-1)
        video = clip.permute(0, 2, 1, 3, 4)
        if self.single:
            x = self.backbone.proj(video).flatten(2).transpose(1, 2) + self.backbone.pos
            for blk in self.backbone.blocks:
                x = blk(x)
            seq, glob = self.backbone.norm(x), self.backbone.norm(x.mean(1))
        else:
            seq, glob = self.backbone.extract(video, False), self.backbone.extract(video, True)
        v_seq, g = self.vproj(seq), self.vproj(glob)
        n = v_seq.shape[1]
        al = F.interpolate(tok.transpose(1, 2), size=n, mode="linear", align_corners=False).transpose(1, 2)
        pred = self.to_frame(self.pred(torch.cat([g.unsqueeze(1), al], 1))[:, 1:])
        diff = (pred - v_seq).abs().amax(1)
        fused = torch.cat([diff, g], 1)
        mse = ((pred - v_seq) ** 2).mean((1, 2))
        lv = self.a2v_head(fused).squeeze(-1)
        w = self.conf(torch.cat([feat, fused, la[:, None], lv[:, None]], 1)).softmax(-1)
        p = (w[:, 0] * la.sigmoid() + w[:, 1] * lv.sigmoid()).clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p)), mse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="+")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--single-pass", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"PyTorch {torch.__version__} stage-2 step on cpu, {torch.get_num_threads()} threads, batch {a.batch}, {a.steps} timed steps, "
          f"{'one' if a.single_pass else 'two'} backbone passes")
    for path in a.config:
        cfg = json.load(open(path))
        m, r = cfg["model"], cfg["recipe"]
        torch.manual_seed(0)
        net = AVDetector(m, a.single_pass)
        bb = [p for n, p in net.named_parameters() if n.startswith("backbone.") and p.requires_grad]
        rest = [p for n, p in net.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        opt = torch.optim.AdamW([{"params": bb, "lr": r["lr"] * cfg["backbone_lr_scale"]}, {"params": rest, "lr": r["lr"]}], weight_decay=r["weight_decay"])
        v = m["visual_backbone"]
        mel = torch.randn(a.batch, 128, 768)
        clip = torch.randn(a.batch, v["n_frames"], 3, v["img_size"], v["img_size"])
        y = torch.tensor([0.0, 1.0]).repeat(a.batch // 2 + 1)[: a.batch]

        def step():
            opt.zero_grad()
            logit, mse = net(mel, clip)
            loss = F.binary_cross_entropy_with_logits(logit, y) + cfg["lambda_align"] * torch.where(y > 0, F.relu(cfg["margin_align"] - mse), mse).mean()
            loss.backward()
            nn.utils.clip_grad_norm_(bb + rest, r.get("clip_norm") or 1.0)
            opt.step()

        net.train()
        step()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        ms = (time.perf_counter() - t) * 1000 / a.steps
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{path}: {ms:.1f} ms/step, peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
