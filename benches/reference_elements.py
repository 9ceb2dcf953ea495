"""Element extraction the reference's way, in Python, for comparison with
`pipeline bench elements` on the same clips (it leaves them under
target/bench-elements/WxH-5s/).

Per clip, as ELEMENTS.md specifies: decode the audio (PyAV), mean of channels,
resample to 16 kHz (torchaudio), the 3.2 s window, torchaudio's
MelSpectrogram (n_fft 512, win 256, hop 64, Hamming, HTK scale, Slaney norm),
log, pad/crop to 768, z-score; decode the video (PyAV) up to the last of the
16 sampled frames, RGB, bicubic resize to 224 (torch), uint8. The window start
is the same fraction of the clip as the Rust side uses. Clips are spread over a
process pool of --workers processes, one torch thread each, as a DataLoader
with workers would do.

Needs, in the project's torch venv: pip install torchaudio==2.11.0 av numpy
Usage:
    python benches/reference_elements.py target/bench-elements/224x224-5s --workers 2
"""
import argparse, glob, math, os, time
from multiprocessing import Pool

import av
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

SR = 16000
CLIP_S = 3.2
T = 768
SIZE = 224
MEL = None


def mel_transform():
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=512, win_length=256, hop_length=64,
        window_fn=torch.hamming_window, center=True, pad_mode="reflect", power=2.0,
        n_mels=128, f_min=0.0, f_max=8000.0, mel_scale="htk", norm="slaney")


def frame_indices(start, end):
    length = max(1, end - start)
    seg = max(1, length // 8)
    out = []
    for k in range(8):
        a = start + k * seg
        for q in (0.25, 0.75):
            out.append(min(end - 1, a + int(math.floor(q * seg))))
    return out


def one(args):
    path, frac = args
    global MEL
    if MEL is None:
        torch.set_num_threads(1)
        MEL = mel_transform()
    # Audio
    with av.open(path) as c:
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        chunks = [f.to_ndarray() for f in c.decode(s)]
    a = np.concatenate([x.reshape(x.shape[0], -1) if x.ndim == 2 else x for x in chunks], axis=1)
    mono = torch.from_numpy(a.astype(np.float32)).mean(0)
    wav = torchaudio.functional.resample(mono, rate, SR)
    # Video: frame count and rate from the container.
    with av.open(path) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate)
        n_frames = v.frames or int(float(v.duration * v.time_base) * fps)
        clip_frames = int(round(CLIP_S * fps))
        starts = n_frames - clip_frames + 1
        start = min(int(frac * starts), starts - 1) if n_frames > clip_frames else 0
        end = min(n_frames, start + clip_frames)
        want = frame_indices(start, end)
        got = {}
        for i, fr in enumerate(c.decode(v)):
            if i in want and i not in got:
                got[i] = fr.to_ndarray(format="rgb24")
            if i >= max(want):
                break
    x = torch.from_numpy(np.stack([got[i] for i in want])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    frames = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    # Mel of the window
    s0 = int(start / fps * SR)
    seg = wav[s0:s0 + int(CLIP_S * SR)]
    seg = F.pad(seg, (0, int(CLIP_S * SR) - seg.numel()))
    m = torch.log(MEL(seg) + 1e-6)
    m = F.pad(m, (0, max(0, T - m.shape[1])))[:, :T]
    m = (m - m.mean()) / (m.std() + 1e-6)
    return m.shape, frames.shape


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    a = p.parse_args()
    paths = sorted(glob.glob(os.path.join(a.dir, "*.mp4")))
    if not paths:
        raise SystemExit(f"no .mp4 clips under {a.dir}: run `pipeline bench elements` first")
    for q in paths:
        with open(q, "rb") as f:
            f.read()
    jobs = [(q, (i + 0.5) / len(paths)) for i, q in enumerate(paths)]
    with Pool(a.workers) as pool:
        pool.map(one, jobs[: a.workers])  # start-up and imports, not timed
        t = time.perf_counter()
        shapes = pool.map(one, jobs)
        dt = time.perf_counter() - t
    assert all(tuple(m) == (128, T) and tuple(fr) == (16, SIZE, SIZE, 3) for m, fr in shapes)
    print(f"{a.dir}: reference-style Python {len(paths) / dt:.1f} clips/s ({dt:.2f} s, "
          f"{len(paths)} clips, {a.workers} workers)")


if __name__ == "__main__":
    main()
