"""Independent oracle for the element log-mel: torchaudio's MelSpectrogram
semantics written out with plain torch (torchaudio is not required), applied
to the known signal of golden/mel_and_frames.json.

Usage: python mel_reference.py OUT.safetensors
Writes float32 tensors: signal [64000], power_mel_raw [128, T],
mel_start0p5 [128, 768], mel_short_input [128, 768], and
power_mel_raw_f64: the same power mel computed in float64 (free of the float32
rounding that the reference itself carries).
"""
import json
import math
import struct
import sys

import torch

SR = 16000
N_FFT, WIN, HOP, N_MELS, N_FRAMES = 512, 256, 64, 128, 768


def signal():
    t = torch.arange(4 * SR, dtype=torch.float64) / SR
    wav = 0.5 * torch.sin(2 * math.pi * (200 * t + 350 * t ** 2)) * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))
    wav = wav + 0.1 * torch.sin(2 * math.pi * 440 * t)
    return wav.to(torch.float32)


def hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_fbanks(dtype=torch.float32):
    # torchaudio.functional.melscale_fbanks(n_freqs, 0, 8000, 128, 16000, norm="slaney", mel_scale="htk")
    n_freqs = N_FFT // 2 + 1
    all_freqs = torch.linspace(0, SR // 2, n_freqs, dtype=dtype)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), N_MELS + 2, dtype=dtype)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1, dtype=dtype), torch.min(down, up))
    enorm = 2.0 / (f_pts[2 : N_MELS + 2] - f_pts[:N_MELS])
    return fb * enorm.unsqueeze(0)


def power_mel(wav):
    spec = torch.stft(
        wav, n_fft=N_FFT, hop_length=HOP, win_length=WIN,
        window=torch.hamming_window(WIN, dtype=wav.dtype), center=True, pad_mode="reflect",
        normalized=False, onesided=True, return_complex=True,
    )
    power = spec.abs() ** 2.0
    fb = mel_fbanks(wav.dtype)
    return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)


def element(wav, start_sec):
    start = int(start_sec * SR)
    seg = wav[start : start + 51200]
    if seg.numel() < 51200:
        seg = torch.nn.functional.pad(seg, (0, 51200 - seg.numel()))
    x = torch.log(power_mel(seg) + 1e-6)
    if x.shape[1] < N_FRAMES:
        x = torch.nn.functional.pad(x, (0, N_FRAMES - x.shape[1]))
    x = x[:, :N_FRAMES]
    return (x - x.mean()) / (x.std() + 1e-6)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous().to(torch.float32)
        data = struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    wav = signal()
    write_safetensors(sys.argv[1], {
        "signal": wav,
        "power_mel_raw": power_mel(wav[8000:59200]),
        "power_mel_raw_f64": power_mel(wav[8000:59200].to(torch.float64)),
        "mel_start0p5": element(wav, 0.5),
        "mel_short_input": element(wav[: 2 * SR], 0.5),
    })


if __name__ == "__main__":
    main()
