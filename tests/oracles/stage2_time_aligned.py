"""Independent oracle for stage 2's `time_aligned` A2V mode (src/models/stage2.rs):
the reference AVDetector's forward written out with plain torch from the
reference state-dict names, plus the time-aligned discrepancy as README
describes it. Run on the golden stage-2 weights and inputs.

Usage: python stage2_time_aligned.py WEIGHTS IO OUT
Writes float32 tensors: frame_times [B,T] (the times it used), ref_<name> (the
reference mode, which must equal the golden outputs: a check of the oracle
itself) and ta_<name> (time_aligned, audio lead 0.04 s) for logit_audio,
logit_a2v, logit_final, w_audio, w_a2v, mismatch_mse, v_seq, g_vis.
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

DT = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
HOP = 64 / 16000
LEAD = 0.04


def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    return {k: torch.frombuffer(bytearray(data[v["data_offsets"][0]:v["data_offsets"][1]]),
                                dtype=DT[v["dtype"]]).reshape(v["shape"]).float()
            for k, v in h.items() if k != "__metadata__"}


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        b = bytes(t.detach().contiguous().float().untyped_storage())
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def encoder_layer(w, p, x, heads):
    """nn.TransformerEncoderLayer (post-norm, ReLU), eval mode."""
    d = x.shape[-1]
    qkv = F.linear(x, w[p + "self_attn.in_proj_weight"], w[p + "self_attn.in_proj_bias"])
    q, k, v = qkv.split(d, -1)
    b, n, _ = x.shape
    sh = lambda t: t.view(b, n, heads, d // heads).transpose(1, 2)
    a = torch.softmax(sh(q) @ sh(k).transpose(-2, -1) / (d // heads) ** 0.5, -1) @ sh(v)
    a = F.linear(a.transpose(1, 2).reshape(b, n, d), w[p + "self_attn.out_proj.weight"], w[p + "self_attn.out_proj.bias"])
    x = F.layer_norm(x + a, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"])
    f = F.linear(F.relu(F.linear(x, w[p + "linear1.weight"], w[p + "linear1.bias"])), w[p + "linear2.weight"], w[p + "linear2.bias"])
    return F.layer_norm(x + f, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"])


def stack(w, prefix, x, heads):
    i = 0
    while f"{prefix}layers.{i}.linear1.weight" in w:
        x = encoder_layer(w, f"{prefix}layers.{i}.", x, heads)
        i += 1
    return x


def head(w, p, x):
    return F.linear(F.relu(F.linear(x, w[p + "0.weight"], w[p + "0.bias"])), w[p + "3.weight"], w[p + "3.bias"])


def vit_block(w, p, x, heads):
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"])
    bias = torch.cat([w[p + "attn.q_bias"], torch.zeros(d), w[p + "attn.v_bias"]])
    b, n, _ = x.shape
    q, k, v = F.linear(h, w[p + "attn.qkv.weight"], bias).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, -1) @ v
    x = x + F.linear(a.transpose(1, 2).reshape(b, n, d), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
    h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"])
    m = F.linear(F.gelu(F.linear(h, w[p + "mlp.layers.0.linear.weight"], w[p + "mlp.layers.0.linear.bias"])),
                 w[p + "mlp.layers.1.linear.weight"], w[p + "mlp.layers.1.linear.bias"])
    return x + m


def forward(w, mel, clip, times, time_aligned, patch_len=64, audio_heads=4, a2v_heads=2, vis_heads=2, tubelet=2):
    b = mel.shape[0]
    n_tok = mel.shape[2] // patch_len
    x = mel.view(b, 128, n_tok, patch_len).permute(0, 2, 1, 3).reshape(b, n_tok, -1)
    tok = stack(w, "audio_enc.encoder.", F.linear(x, w["audio_enc.patch_proj.weight"], w["audio_enc.patch_proj.bias"]) + w["audio_enc.pos_emb"], audio_heads)
    feat = tok.mean(1)
    la = head(w, "audio_head.", feat).squeeze(-1)
    e = "vis_enc.backbone.encoder."
    v = F.conv3d(clip.permute(0, 2, 1, 3, 4), w[e + "patch_embedding.projection.weight"], w[e + "patch_embedding.projection.bias"], stride=(tubelet, 16, 16))
    v = v.flatten(2).transpose(1, 2) + w[e + "pos_embedding.emb"]
    i = 0
    while f"{e}blocks.{i}.norm1.weight" in w:
        v = vit_block(w, f"{e}blocks.{i}.", v, vis_heads)
        i += 1
    dv = v.shape[-1]
    seq = F.linear(F.layer_norm(v, (dv,), w[e + "norm.weight"], w[e + "norm.bias"]), w["vis_enc.proj.weight"], w["vis_enc.proj.bias"])
    g = F.linear(F.layer_norm(v.mean(1), (dv,), w[e + "norm.weight"], w[e + "norm.bias"]), w["vis_enc.proj.weight"], w["vis_enc.proj.bias"])
    d = seq.shape[-1]
    if time_aligned:
        steps = times.shape[1] // tubelet
        coord = (((times + LEAD) / HOP - (patch_len - 1) / 2) / patch_len).clamp(0, n_tok - 1)
        lo = coord.floor().long()
        hi = (lo + 1).clamp(max=n_tok - 1)
        fr = (coord - lo)[..., None]
        pick = lambda idx: torch.stack([tok[j, idx[j]] for j in range(b)])
        al = (pick(lo) * (1 - fr) + pick(hi) * fr).view(b, steps, tubelet, d).mean(2)
        seq = seq.view(b, steps, -1, d).mean(2)
    else:
        al = F.interpolate(tok.transpose(1, 2), size=seq.shape[1], mode="linear", align_corners=False).transpose(1, 2)
    n = seq.shape[1]
    pred = stack(w, "predictor.encoder.", torch.cat([g[:, None], al], 1), a2v_heads)[:, 1:]
    pred = F.linear(pred, w["predictor.to_frame_feat.weight"], w["predictor.to_frame_feat.bias"])
    p_c, v_c = pred, seq
    if time_aligned:
        z = lambda t: (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-4)
        p_c, v_c = z(pred), z(seq)
    diff = (p_c - v_c).abs().amax(1)
    fused = torch.cat([diff, g], 1)
    mse = ((p_c - v_c) ** 2).mean((1, 2))
    lv = head(w, "a2v_head.", fused).squeeze(-1)
    wts = head(w, "conf_net.", torch.cat([feat, fused, la[:, None], lv[:, None]], 1)).softmax(-1)
    p = (wts[:, 0] * la.sigmoid() + wts[:, 1] * lv.sigmoid()).clamp(1e-6, 1 - 1e-6)
    return {"logit_audio": la, "logit_a2v": lv, "logit_final": torch.log(p / (1 - p)), "w_audio": wts[:, 0],
            "w_a2v": wts[:, 1], "mismatch_mse": mse, "v_seq": seq, "g_vis": g}


def main():
    w, io = read(sys.argv[1]), read(sys.argv[2])
    mel, clip = io["mel"], io["v_clip"]
    b, t = clip.shape[0], clip.shape[1]
    times = 0.3 + 0.7 * torch.arange(t, dtype=torch.float32)[None] + 0.05 * torch.arange(b, dtype=torch.float32)[:, None]
    out = {"frame_times": times}
    with torch.no_grad():
        for k, v in forward(w, mel, clip, times, False).items():
            out["ref_" + k] = v
        for k, v in forward(w, mel, clip, times, True).items():
            out["ta_" + k] = v
    write(sys.argv[3], out)


if __name__ == "__main__":
    main()
