//! `pipeline-media elements extract`: cuts the element of any video files
//! into an element folder, for `pipeline detect` to score.
//!
//! Each file gets exactly the elements stage's first clip
//! ([`super::elements::extract_clip`] with `j = 0`, whatever
//! `clips_per_video` says): the same decoding, window rule and preprocessing.
//! The window is `clip_seconds` (3.2 s) long and starts at a frame drawn
//! uniformly from the seed and the file's key (a video no longer than the
//! window uses all of it); the audio is down-mixed, resampled to 16 kHz,
//! turned into a z-scored log-mel `[128, 768]`; 16 frames at the quartile
//! points of 8 slices of the window, resized to `frame_size`. The key is the
//! file's path under its corpus root (`<Category>/<race>/<gender>/<id>/<name>`)
//! when the file lies in a FakeAVCeleb-shaped folder, so a corpus video gets
//! the very window the stage gave it, and its file name otherwise.
//!
//! Parameters: the elements stage's (`--params`, a file or inline JSON, as in
//! `config/<profile>/elements.json`); without them, the paper profile's
//! extraction (seed 20240601, 3.2 s windows, 224x224 frames, videos of 1 s at
//! least).
//!
//! The folder holds the shards, `manifest.jsonl` (one row per readable file;
//! every row in the `test` split; a file outside a FakeAVCeleb-shaped folder
//! has no label, and its row holds the placeholder category
//! `RealVideo-RealAudio` and identity `unknown`, which detection never
//! reads) and `inputs.jsonl` (every file in the order given, with its row or
//! why it could not be read). A file that cannot be read does not stop the
//! others; the command fails only when the folder cannot be written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::corpus::Category;
use super::elements::extract_clip;
use super::items::file_blake3;
use super::media_params::ElementsParams;
use crate::elementset::{
    shard_name, write_inputs, write_manifest, ClipRecord, ExtractedInput, ShardWriter, Split,
};
use crate::media::element::Element;
use crate::media::mel::MelSpectrogram;

/// The parameters used without `--params`: the paper profile's extraction.
pub const DEFAULT_PARAMS: &str = r#"{"seed": 20240601}"#;

/// Arguments of `pipeline-media elements extract`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExtractArgs {
    /// The element folder to write (created; its previous content is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// The elements stage's parameters: a JSON file or inline JSON (default:
    /// the paper profile's extraction, seed 20240601).
    #[arg(long)]
    pub params: Option<String>,
    /// Print no summary line.
    #[arg(long)]
    pub quiet: bool,
    /// The video files.
    #[arg(required = true)]
    pub videos: Vec<PathBuf>,
}

/// A file's element and the BLAKE3 of its bytes, or why it could not be read.
type Cut = Result<(Element, String), String>;

/// Reads `--params`: inline JSON when it starts with `{`, else a file.
fn read_params(arg: Option<&str>) -> Result<ElementsParams> {
    let text = match arg {
        None => DEFAULT_PARAMS.to_string(),
        Some(t) if t.trim_start().starts_with('{') => t.to_string(),
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the elements parameters file {file}"))?,
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--params {}: not JSON", arg.unwrap_or("(default)")))?;
    ElementsParams::from_json(&v).with_context(|| {
        format!(
            "--params {}: not the elements stage's parameters",
            arg.unwrap_or("(default)")
        )
    })
}

/// What the key of `path` is and what its folders say of it: its path
/// under the corpus root and its category when its last five components
/// are `<Category>/<race>/<gender>/<id>/<name>` with a known category, else
/// its file name and nothing.
pub fn key_of(path: &Path) -> (String, Option<[String; 4]>, Option<Category>) {
    let tail = |p: &Path| -> Option<(String, [String; 4], Category)> {
        let parts: Vec<String> = p
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let [cat, race, gender, id, name] = parts.get(parts.len().checked_sub(5)?..)? else {
            return None;
        };
        let category = Category::from_folder(cat)?;
        Some((
            format!("{cat}/{race}/{gender}/{id}/{name}"),
            [race.clone(), gender.clone(), id.clone(), name.clone()],
            category,
        ))
    };
    let found = tail(path).or_else(|| tail(&std::fs::canonicalize(path).ok()?));
    match found {
        Some((key, parts, cat)) => (key, Some(parts), Some(cat)),
        None => (
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            None,
            None,
        ),
    }
}

/// A media error's message without the file name it starts with (each
/// reason is listed beside its file).
fn without_path(reason: String, path: &Path) -> String {
    match reason.strip_prefix(&format!("{}: ", path.display())) {
        Some(rest) => rest.to_string(),
        None => reason,
    }
}

/// Runs `pipeline-media elements extract`.
pub fn run(args: ExtractArgs) -> Result<()> {
    let params = read_params(args.params.as_deref())?;
    let mel = MelSpectrogram::new();
    let cut: Vec<(PathBuf, Cut)> = args
        .videos
        .par_iter()
        .map(|path| {
            let (key, _, _) = key_of(path);
            let r = file_blake3(path)
                .map_err(|e| format!("{e:#}"))
                .and_then(|hash| {
                    extract_clip(path, &key, 0, &params, &mel)
                        .map(|el| (el, hash))
                        .map_err(|e| without_path(e.to_string(), path))
                });
            (path.clone(), r)
        })
        .collect();
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("cannot clear {}", args.out.display()))?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut shard = ShardWriter::new(params.frame_size as usize);
    let mut records = Vec::new();
    let mut inputs = Vec::new();
    for (path, r) in cut {
        let (key, parts, category) = key_of(&path);
        let mut input = ExtractedInput {
            file: path.display().to_string(),
            key: key.clone(),
            category,
            row: None,
            error: None,
        };
        match r {
            Err(e) => input.error = Some(e),
            Ok((el, source_blake3)) => {
                let [race, gender, identity, _] = parts.unwrap_or_default();
                let placeholder = category.unwrap_or(Category::Rvra);
                input.row = Some(records.len());
                records.push(ClipRecord {
                    audio_fake: placeholder.audio_fake(),
                    category: placeholder,
                    frame_times: Some(el.frame_times.to_vec()),
                    gender,
                    identity: if category.is_some() {
                        identity
                    } else {
                        "unknown".to_string()
                    },
                    index: shard.len() as u64,
                    key,
                    race,
                    shard: shard_name(0),
                    source_blake3,
                    split: Split::Test,
                    start_frame: el.window.start_frame as u64,
                    video_fake: placeholder.y_video(),
                    window_start_sec: el.window.start_sec,
                });
                shard.push(&el.mel, &el.frames)?;
            }
        }
        inputs.push(input);
    }
    if !shard.is_empty() {
        shard.write(&args.out.join(shard_name(0)), None)?;
    }
    write_manifest(&args.out, &records)?;
    write_inputs(&args.out, &inputs)?;
    if args.quiet {
        return Ok(());
    }
    let failed = inputs.iter().filter(|i| i.error.is_some()).count();
    eprintln!(
        "extracted {} of {} files into {}{}",
        records.len(),
        inputs.len(),
        args.out.display(),
        if failed > 0 {
            format!(" ({failed} unreadable)")
        } else {
            String::new()
        }
    );
    Ok(())
}
