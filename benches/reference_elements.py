"""Element extraction the reference's way, in Python, for comparison with
`pipeline bench elements` on the same clips (it leaves them under
target/bench-elements/WxH-5s/).

Two recipes, both as ELEMENTS.md specifies the element (3.2 s window, the
16-frame quartile sampler, torchaudio's MelSpectrogram with n_fft 512, win
256, hop 64, Hamming, HTK scale, Slaney norm, log, pad/crop to 768, z-score).
The window start is the same fraction of the clip as the Rust side uses.

--recipe reference (default) follows the reference's preprocess.py: decord's
    VideoReader and get_batch for the 16 frames, torchaudio.load for the audio
    (mean of channels, torchaudio resample), per frame a PIL image through
    torchvision's Resize(224, bicubic), RandomGrayscale, RandomHorizontalFlip,
    ToTensor and Normalize, and three float32 .npy files written per clip
    (mel, v_clip, label) under a temporary folder.
--recipe lean is a faster Python than the reference: PyAV decodes the audio
    and the video only up to the last sampled frame, converts only the 16
    sampled frames, resizes them in one torch call, keeps uint8 and writes
    nothing.

The reference runs one clip after another in one process (--workers 1, torch
on all cores); --workers N spreads the clips over a process pool, the cores
shared out among the workers' torch threads, as a DataLoader with workers
would do, which only helps the Python side.

Needs, in the project's torch venv:
    pip install torchaudio==2.11.0 torchvision==0.26.0 torchcodec av decord numpy
Usage:
    python benches/reference_elements.py target/bench-elements/224x224-5s --workers 2
"""
import argparse, glob, math, os, tempfile, time
from multiprocessing import Pool

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

SR = 16000
CLIP_S = 3.2
T = 768
SIZE = 224
STATE = {}


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


def window(n_frames, fps, frac):
    clip_frames = int(round(CLIP_S * fps))
    starts = n_frames - clip_frames + 1
    start = min(int(frac * starts), starts - 1) if n_frames > clip_frames else 0
    return start, min(n_frames, start + clip_frames)


def log_mel(wav, start, fps):
    s0 = int(start / fps * SR)
    seg = wav[s0:s0 + int(CLIP_S * SR)]
    seg = F.pad(seg, (0, int(CLIP_S * SR) - seg.numel()))
    m = torch.log(STATE["mel"](seg) + 1e-6)
    m = F.pad(m, (0, max(0, T - m.shape[1])))[:, :T]
    return (m - m.mean()) / (m.std() + 1e-6)


def setup(recipe, out_dir, threads):
    torch.set_num_threads(threads)
    STATE["mel"] = mel_transform()
    STATE["out"] = out_dir
    if recipe == "reference":
        import torchvision.transforms as TV
        STATE["tf"] = TV.Compose([
            TV.Resize((SIZE, SIZE), interpolation=TV.InterpolationMode.BICUBIC),
            TV.RandomGrayscale(p=0.5),
            TV.RandomHorizontalFlip(p=0.5),
            TV.ToTensor(),
            TV.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])


def reference(path, frac):
    from decord import VideoReader, cpu
    from PIL import Image
    vr = VideoReader(path, ctx=cpu(0))
    fps = float(vr.get_avg_fps())
    wav, rate = torchaudio.load(path)
    wav = wav.mean(dim=0)
    if rate != SR:
        wav = torchaudio.functional.resample(wav, rate, SR)
    start, end = window(len(vr), fps, frac)
    raw = vr.get_batch(frame_indices(start, end)).asnumpy()
    frames = torch.stack([STATE["tf"](Image.fromarray(f)) for f in raw])
    mel = log_mel(wav, start, fps)
    stem = os.path.join(STATE["out"], os.path.splitext(os.path.basename(path))[0])
    np.save(stem + "_mel.npy", mel.numpy().astype(np.float32))
    np.save(stem + "_v_clip.npy", frames.numpy().astype(np.float32))
    np.save(stem + "_label.npy", np.float32(0))
    return tuple(mel.shape), tuple(frames.shape)


def lean(path, frac):
    import av
    with av.open(path) as c:
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        chunks = [f.to_ndarray() for f in c.decode(s)]
    a = np.concatenate([x.reshape(x.shape[0], -1) for x in chunks], axis=1)
    wav = torchaudio.functional.resample(torch.from_numpy(a.astype(np.float32)).mean(0), rate, SR)
    with av.open(path) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate)
        n_frames = v.frames or int(float(v.duration * v.time_base) * fps)
        start, end = window(n_frames, fps, frac)
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
    mel = log_mel(wav, start, fps)
    return tuple(mel.shape), (frames.shape[0], frames.shape[3], frames.shape[1], frames.shape[2])


def one(args):
    recipe, path, frac = args
    return (reference if recipe == "reference" else lean)(path, frac)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--recipe", choices=["reference", "lean"], default="reference")
    a = p.parse_args()
    paths = sorted(glob.glob(os.path.join(a.dir, "*.mp4")))
    if not paths:
        raise SystemExit(f"no .mp4 clips under {a.dir}: run `pipeline bench elements` first")
    for q in paths:
        with open(q, "rb") as f:
            f.read()
    jobs = [(a.recipe, q, (i + 0.5) / len(paths)) for i, q in enumerate(paths)]
    threads = max(1, (os.cpu_count() or 1) // a.workers)
    with tempfile.TemporaryDirectory() as out, \
            Pool(a.workers, initializer=setup, initargs=(a.recipe, out, threads)) as pool:
        pool.map(one, jobs[: a.workers])  # start-up and imports, not timed
        t = time.perf_counter()
        shapes = pool.map(one, jobs)
        dt = time.perf_counter() - t
    assert all(m == (128, T) and fr == (16, 3, SIZE, SIZE) for m, fr in shapes), shapes[0]
    print(f"{a.dir}: {a.recipe} recipe in Python {len(paths) / dt:.1f} clips/s "
          f"({dt:.2f} s, {len(paths)} clips, {a.workers} workers)")


if __name__ == "__main__":
    main()
