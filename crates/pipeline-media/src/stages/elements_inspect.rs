//! `pipeline elements inspect`: shows what the model sees for one clip. Prints
//! the clip's manifest row and writes its 16 frames (one PNG each and a 4x4
//! contact sheet) and its mel (a PNG, low frequencies at the bottom).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::elementset::{ElementSet, MANIFEST, MEL_BINS, MEL_FRAMES, N_FRAMES};

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
    let set = ElementSet::open(&args.elements)?;
    let manifest = args.elements.join(MANIFEST);
    let clip = match &args.key {
        Some(k) => set
            .find(k)
            .with_context(|| format!("no clip with key {k} in {}", manifest.display()))?,
        None if args.row < set.clips.len() => args.row,
        None => anyhow::bail!(
            "{} has {} rows; --row {} is past the end",
            manifest.display(),
            set.clips.len(),
            args.row
        ),
    };
    println!("{}", serde_json::to_string_pretty(&set.clips[clip])?);
    let s = set.frame_size;
    let mel = set.mel(clip)?;
    let frames = set.frames(clip)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let frame_len = s * s * 3;
    for k in 0..N_FRAMES {
        write_png(
            &args.out.join(format!("frame_{k:02}.png")),
            s,
            s,
            &frames[k * frame_len..(k + 1) * frame_len],
        )?;
    }
    let mut sheet = vec![0u8; 16 * frame_len];
    for k in 0..N_FRAMES {
        let (gx, gy) = (k % 4, k / 4);
        for y in 0..s {
            let src = &frames[k * frame_len + y * s * 3..k * frame_len + (y + 1) * s * 3];
            let at = ((gy * s + y) * 4 * s + gx * s) * 3;
            sheet[at..at + s * 3].copy_from_slice(src);
        }
    }
    write_png(&args.out.join("frames.png"), 4 * s, 4 * s, &sheet)?;
    let (lo, hi) = mel
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let mut img = Vec::with_capacity(MEL_BINS * MEL_FRAMES * 3);
    for m in (0..MEL_BINS).rev() {
        for t in 0..MEL_FRAMES {
            img.extend_from_slice(&colour(
                (mel[m * MEL_FRAMES + t] - lo) / (hi - lo).max(1e-6),
            ));
        }
    }
    write_png(&args.out.join("mel.png"), MEL_FRAMES, MEL_BINS, &img)?;
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
    /// Cut the element of any video files as the elements stage does (what
    /// `pipeline detect` scores); an unreadable file is listed, not fatal.
    Extract(super::elements_extract::ExtractArgs),
}

impl ElementsCommand {
    pub fn run(self) -> Result<()> {
        match self {
            ElementsCommand::Inspect(a) => run(a),
            ElementsCommand::Extract(a) => super::elements_extract::run(a),
        }
    }
}
