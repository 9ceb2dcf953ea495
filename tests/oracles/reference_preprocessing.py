"""An approximation of the reference's per-clip preprocessing, for timing
`pipeline bench elements` against Python: audio decoded and resampled to
16 kHz mono (PyAV, i.e. FFmpeg's swresample, as torchaudio's FFmpeg backend
does), the MelSpectrogram of ELEMENTS.md in torch, the 16 frames read with
OpenCV's VideoCapture and resized bicubic, stored as the reference's float32
[16, 3, 224, 224].

Usage: python reference_preprocessing.py WORKERS CLIP...
Needs torch, av, opencv-python-headless, numpy. Prints clips per second.
"""
import math
import sys
import time
from multiprocessing import Pool

import av
import cv2
import numpy as np
import torch

SR, N_FFT, WIN, HOP, N_MELS, N_FRAMES = 16000, 512, 256, 64, 128, 768


def fbanks():
    n_freqs = N_FFT // 2 + 1
    all_freqs = torch.linspace(0, SR // 2, n_freqs)
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    m_pts = torch.linspace(mel(0.0), mel(8000.0), N_MELS + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    fb = torch.clamp(torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]), min=0)
    return fb * (2.0 / (f_pts[2:] - f_pts[:-2])).unsqueeze(0)


FB = fbanks()
WINDOW = torch.hamming_window(WIN)


def element(path, u=0.5):
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = int(round(3.2 * fps))
    start, length = (0, total) if total <= want else (int(u * (total - want + 1)), want)
    seg = max(1, length // 8)
    idx = []
    for k in range(8):
        s = start + k * seg
        idx += [min(s + seg // 4, total - 1), min(s + (3 * seg) // 4, total - 1)]
    frames, n, last = {}, 0, None
    while n <= max(idx):
        ok, img = cap.read()
        if not ok:
            break
        last = img
        if n in idx:
            frames[n] = img
        n += 1
    cap.release()
    clip = []
    for i in idx:
        img = cv2.cvtColor(frames.get(i, last), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_CUBIC)
        clip.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
    video = torch.stack(clip)

    with av.open(path) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=SR)
        chunks = []
        for f in c.decode(audio=0):
            for r in res.resample(f):
                chunks.append(r.to_ndarray().reshape(-1))
        for r in res.resample(None):
            chunks.append(r.to_ndarray().reshape(-1))
    wav = torch.from_numpy(np.concatenate(chunks))
    a = int(start / fps * SR)
    w = wav[a : a + 51200]
    w = torch.nn.functional.pad(w, (0, 51200 - w.numel()))
    spec = torch.stft(w, N_FFT, HOP, WIN, WINDOW, center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    x = torch.log(torch.matmul(spec.T, FB).T + 1e-6)[:, :N_FRAMES]
    x = torch.nn.functional.pad(x, (0, N_FRAMES - x.shape[1]))
    return (x - x.mean()) / (x.std() + 1e-6), video


def init():
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def main():
    workers, clips = int(sys.argv[1]), sys.argv[2:]
    with Pool(workers, initializer=init) as pool:
        pool.map(element, clips[:workers])  # warm the workers
        t = time.perf_counter()
        pool.map(element, clips)
        dt = time.perf_counter() - t
    print(f"reference-style Python: {len(clips) / dt:.1f} clips/s ({dt:.2f} s) for {len(clips)} clips, {workers} workers")


if __name__ == "__main__":
    main()
