//! `pipeline bench elements`: clips per second of element extraction next to
//! the time the `ffmpeg` CLI takes to decode the same clips to null (the
//! floor), at 224x224 and 1280x720. Clips are generated once (5 s, H.264 +
//! AAC 44.1 kHz) into a work folder and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::media::element::{extract, ElementSpec};
use crate::media::encode::{write_mp4, VideoSpec};
use crate::media::mel::MelSpectrogram;
use crate::rng::Rng;

/// Arguments of `pipeline bench elements`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchElementsArgs {
    /// Work folder for the generated clips (reused when present).
    #[arg(long, default_value = "target/bench-elements")]
    pub dir: PathBuf,
    /// Clips per size.
    #[arg(long, default_value_t = 20)]
    pub clips: usize,
    /// Seconds per clip.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Source sizes, WxH, comma-separated.
    #[arg(long, default_value = "224x224,1280x720")]
    pub sizes: String,
    /// Element frame size.
    #[arg(long, default_value_t = 224)]
    pub frame_size: u32,
    /// Worker threads for both sides (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also time the reference's Python recipe (benches/reference_elements.py)
    /// on the same clips with this interpreter (one with torch, torchaudio,
    /// torchvision, torchcodec, decord), as one process and on the threads'
    /// count of worker processes.
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// The reference recipe's script, from the source tree.
const REFERENCE_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference_elements.py");

/// Runs the reference recipe on `dir` with `workers` processes; its clips/s.
fn reference_rate(python: &Path, dir: &Path, workers: usize) -> Result<f64> {
    let out = Command::new(python)
        .arg(REFERENCE_SCRIPT)
        .arg(dir)
        .args(["--workers", &workers.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{REFERENCE_SCRIPT} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // "...: reference recipe in Python 26.3 clips/s (...)"
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "clips/s")
        .and_then(|w| w[0].parse().ok())
        .with_context(|| format!("no clips/s in the reference's output: {text}"))
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .trim()
        .split_once('x')
        .with_context(|| format!("size '{s}' is not WxH"))?;
    Ok((w.parse()?, h.parse()?))
}

/// A moving pattern with noise (so the encoder works as on real video).
fn clip(path: &Path, w: u32, h: u32, seconds: f64, seed: u64) -> Result<()> {
    let fps = 25u32;
    let n = (seconds * f64::from(fps)) as usize;
    let mut rng = Rng::new(seed);
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|f| {
            let mut img = Vec::with_capacity((w * h * 3) as usize);
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let v = (x + 2 * f) as f64 / 7.0 + (y as f64 / 11.0).sin() * 3.0;
                    let noise = (rng.next_u64() & 15) as f64;
                    img.push((128.0 + 100.0 * v.sin() + noise) as u8);
                    img.push((128.0 + 100.0 * (v * 0.7 + f as f64 * 0.05).cos()) as u8);
                    img.push(((x * 255) / w as usize) as u8);
                }
            }
            img
        })
        .collect();
    let rate = 44_100u32;
    let audio: Vec<f32> = (0..(seconds * f64::from(rate)) as usize)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (0.3 * (2.0 * std::f64::consts::PI * (220.0 + 50.0 * t) * t).sin()) as f32
        })
        .collect();
    write_mp4(
        path,
        &VideoSpec {
            width: w,
            height: h,
            fps,
        },
        &frames,
        &audio,
        rate,
    )?;
    Ok(())
}

/// Runs the benchmark and prints its numbers.
pub fn run(args: BenchElementsArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let ffmpeg = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    println!(
        "element extraction: {} clips of {} s per size, elements {}x{}, {threads} threads",
        args.clips, args.seconds, args.frame_size, args.frame_size
    );
    for size in args.sizes.split(',') {
        let (w, h) = parse_size(size)?;
        let dir = args.dir.join(format!("{w}x{h}-{}s", args.seconds));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let paths: Vec<PathBuf> = (0..args.clips)
            .map(|i| dir.join(format!("clip{i:03}.mp4")))
            .collect();
        pool.install(|| {
            paths
                .par_iter()
                .enumerate()
                .filter(|(_, p)| !p.is_file())
                .map(|(i, p)| clip(p, w, h, args.seconds, i as u64))
                .collect::<Result<()>>()
        })?;
        // Warm the page cache so both sides read from memory.
        for p in &paths {
            std::fs::read(p)?;
        }
        let mel = MelSpectrogram::new();
        let spec = ElementSpec {
            clip_seconds: 3.2,
            frame_size: args.frame_size,
            min_seconds: 0.0,
            min_audio_coverage: 0.0,
        };
        let t = Instant::now();
        pool.install(|| {
            paths
                .par_iter()
                .enumerate()
                .map(|(i, p)| {
                    extract(p, &spec, &mel, (i as f64 + 0.5) / args.clips as f64).map(|_| ())
                })
                .collect::<std::result::Result<(), _>>()
        })?;
        let ours = t.elapsed().as_secs_f64();
        let rate = args.clips as f64 / ours;
        print!("{w}x{h}: elements {rate:.1} clips/s ({ours:.2} s)");
        if ffmpeg {
            let t = Instant::now();
            pool.install(|| {
                paths
                    .par_iter()
                    .map(|p| {
                        let ok = Command::new("ffmpeg")
                            .args(["-v", "error", "-threads", "1", "-i"])
                            .arg(p)
                            .args(["-f", "null", "-"])
                            .status()
                            .is_ok_and(|s| s.success());
                        if ok {
                            Ok(())
                        } else {
                            bail!("ffmpeg failed on {}", p.display())
                        }
                    })
                    .collect::<Result<()>>()
            })?;
            let floor = t.elapsed().as_secs_f64();
            println!(
                "; ffmpeg -f null floor {:.1} clips/s ({floor:.2} s); elements/floor time {:.2}x",
                args.clips as f64 / floor,
                ours / floor
            );
        } else {
            println!("; ffmpeg CLI not installed, no floor measured");
        }
        if let Some(py) = &args.python {
            for workers in [1, threads] {
                let r = reference_rate(py, &dir, workers)?;
                println!(
                    "{w}x{h}: the reference's recipe in Python, {workers} process(es): {r:.1} clips/s; \
                     elements {:.1}x faster",
                    rate / r
                );
            }
        }
    }
    if args.python.is_some() {
        return Ok(());
    }
    println!(
        "the reference's recipe (decord + torchaudio + torchvision, float32 .npy out): \
         python benches/reference_elements.py {}/<size>-{}s --workers {threads} on the same clips \
         (or rerun with --python PYTHON)",
        args.dir.display(),
        args.seconds
    );
    Ok(())
}
