//! `pipeline elements inspect`: shows what the model sees for one clip. Prints
//! the clip's manifest row and writes its 16 frames (one PNG each and a 4x4
//! contact sheet) and its mel (a PNG, low frequencies at the bottom).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::media::frames::N_SAMPLED;
use crate::media::mel::{N_FRAMES, N_MELS};

/// Arguments of `pipeline elements inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// The elements folder (holding manifest.jsonl and the shards).
    pub elements: PathBuf,
    /// The clip's key (e.g. `RealVideo-RealAudio/African/men/id00100/00001.mp4`).
    #[arg(long, conflicts_with = "row")]
    pub key: Option<String>,
    /// The clip's row in manifest.jsonl (0-based), when no key is given.
    #[arg(long, default_value_t = 0)]
    pub row: usize,
    /// Where to write the PNG files.
    #[arg(long, default_value = "inspect")]
    pub out: PathBuf,
}

/// Where each tensor of a safetensors file starts and its shape.
struct Header {
    data_start: u64,
    mel: (u64, Vec<usize>),
    frames: (u64, Vec<usize>),
}

fn header(path: &Path, f: &mut std::fs::File) -> Result<Header> {
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!(
            "{}: not a safetensors file (header of {n} bytes)",
            path.display()
        );
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&h)
        .with_context(|| format!("{}: bad safetensors header", path.display()))?;
    let tensor = |name: &str| -> Result<(u64, Vec<usize>)> {
        let t = v
            .get(name)
            .with_context(|| format!("{}: no tensor '{name}'", path.display()))?;
        let start = t["data_offsets"][0]
            .as_u64()
            .with_context(|| format!("{}: bad offsets of '{name}'", path.display()))?;
        let shape = t["shape"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_default();
        Ok((start, shape))
    };
    Ok(Header {
        data_start: 8 + n,
        mel: tensor("mel")?,
        frames: tensor("frames")?,
    })
}

fn read_at(f: &mut std::fs::File, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes an 8-bit RGB PNG.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.write_image_data(rgb)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.finish()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A dark-blue -> yellow colour for `t` in [0, 1].
fn colour(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    [
        (255.0 * t.powf(1.2)) as u8,
        (255.0 * t.powf(0.8) * 0.9) as u8,
        (255.0 * (0.45 * (1.0 - t) + 0.1 * t)) as u8,
    ]
}

/// Runs `pipeline elements inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let manifest = args.elements.join("manifest.jsonl");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "cannot read {}; give the elements folder",
            manifest.display()
        )
    })?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}: line {} is not JSON", manifest.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let row = match &args.key {
        Some(k) => rows
            .iter()
            .find(|r| r["key"] == *k)
            .with_context(|| format!("no clip with key {k} in {}", manifest.display()))?,
        None => rows.get(args.row).with_context(|| {
            format!(
                "{} has {} rows; --row {} is past the end",
                manifest.display(),
                rows.len(),
                args.row
            )
        })?,
    };
    println!("{}", serde_json::to_string_pretty(row)?);
    let shard_name = row["shard"].as_str().context("the row has no shard")?;
    let index = row["index"].as_u64().context("the row has no index")? as usize;
    let shard = args.elements.join(shard_name);
    let mut f =
        std::fs::File::open(&shard).with_context(|| format!("cannot open {}", shard.display()))?;
    let h = header(&shard, &mut f)?;
    let (mel_at, mel_shape) = &h.mel;
    let (fr_at, fr_shape) = &h.frames;
    if mel_shape.get(1..) != Some(&[N_MELS, N_FRAMES][..])
        || fr_shape.len() != 5
        || fr_shape[1] != N_SAMPLED
        || index >= mel_shape[0]
    {
        bail!(
            "{}: unexpected shapes mel {mel_shape:?}, frames {fr_shape:?} for clip {index}",
            shard.display()
        );
    }
    let s = fr_shape[2];
    let mel_len = N_MELS * N_FRAMES * 4;
    let mel_bytes = read_at(
        &mut f,
        h.data_start + mel_at + (index * mel_len) as u64,
        mel_len,
    )?;
    let clip_len = N_SAMPLED * s * s * 3;
    let frames = read_at(
        &mut f,
        h.data_start + fr_at + (index * clip_len) as u64,
        clip_len,
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let frame_len = s * s * 3;
    for k in 0..N_SAMPLED {
        write_png(
            &args.out.join(format!("frame_{k:02}.png")),
            s,
            s,
            &frames[k * frame_len..(k + 1) * frame_len],
        )?;
    }
    let mut sheet = vec![0u8; 16 * frame_len];
    for k in 0..N_SAMPLED {
        let (gx, gy) = (k % 4, k / 4);
        for y in 0..s {
            let src = &frames[k * frame_len + y * s * 3..k * frame_len + (y + 1) * s * 3];
            let at = ((gy * s + y) * 4 * s + gx * s) * 3;
            sheet[at..at + s * 3].copy_from_slice(src);
        }
    }
    write_png(&args.out.join("frames.png"), 4 * s, 4 * s, &sheet)?;
    let mel: Vec<f32> = mel_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (lo, hi) = mel
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let mut img = Vec::with_capacity(N_MELS * N_FRAMES * 3);
    for m in (0..N_MELS).rev() {
        for t in 0..N_FRAMES {
            img.extend_from_slice(&colour((mel[m * N_FRAMES + t] - lo) / (hi - lo).max(1e-6)));
        }
    }
    write_png(&args.out.join("mel.png"), N_FRAMES, N_MELS, &img)?;
    println!(
        "wrote {} (frame_00..15.png, frames.png, mel.png)",
        args.out.display()
    );
    Ok(())
}

/// `pipeline elements ...` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ElementsCommand {
    /// Print a clip's manifest row and write its 16 frames and its mel as PNG images.
    Inspect(InspectArgs),
}

impl ElementsCommand {
    pub fn run(self) -> Result<()> {
        match self {
            ElementsCommand::Inspect(a) => run(a),
        }
    }
}
