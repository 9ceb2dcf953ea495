//! The `elements` stage: one element (z-scored log-mel + 16 RGB frames) per
//! video (or `clips_per_video` of them, keyed `<key>#j`) of the
//! FakeAVCeleb-shaped trees it reads, written as safetensors
//! shards plus a `manifest.jsonl`, with the identity-disjoint
//! train/validation/test split.
//!
//! Items are videos. Each finished item is memoized in the stage's items
//! folder under its own fingerprint (source BLAKE3, key, the extraction
//! parameters), so an interrupted run redoes only the items in flight, and a
//! shard run (`--shard i/n`) fills the memo with its share. The gathering run
//! computes whatever is still missing, then writes the outputs. Bad media
//! (truncated, even when FFmpeg still opens it; corrupt, empty, a missing
//! stream, too short) fails its item only, with the reason in the item log;
//! the stage fails when more than `max_failed_fraction` of them do.
//!
//! Output bytes depend only on the inputs and the parameters (the window
//! start of a clip is drawn from the seed and the clip's key).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::corpus::{scan, Video};
use super::items::{file_blake3, owns, summarize, ItemLog, Outcome};
use super::split::split;
use super::{Stage, StageContext};
use crate::elementset::{
    frames_bytes, read_header, shard_name, write_manifest, ClipRecord, ShardWriter, Split,
    MEL_BYTES,
};
use crate::media::element::{extract, Element, ElementSpec};
use crate::media::mel::MelSpectrogram;
use crate::media::MediaError;
use crate::rng::unit;
use crate::util::write_atomic;

/// Bumped when the bytes of an element or of the outputs would change.
/// 3: a cut MPEG-TS or WAV file fails its item too.
/// 4: the manifest holds each clip's frame times; the split has a test part.
/// 5: a clip whose audio covers less than `min_audio_coverage` of its window
///    fails instead of being padded.
const VERSION: u32 = super::versions::ELEMENTS;

// The extraction writes elements of the format's sizes.
const _: () = assert!(
    crate::media::frames::N_SAMPLED == crate::elementset::N_FRAMES
        && crate::media::mel::N_MELS == crate::elementset::MEL_BINS
        && crate::media::mel::N_FRAMES == crate::elementset::MEL_FRAMES
);

/// The built-in `elements` kind.
pub struct Elements;

type Params = super::media_params::ElementsParams;

fn spec(p: &Params) -> ElementSpec {
    ElementSpec {
        clip_seconds: p.clip_seconds,
        frame_size: p.frame_size,
        min_seconds: p.min_seconds,
        min_audio_coverage: p.min_audio_coverage,
    }
}

/// Cuts clip `j` of the video at `path` as the stage does: its window start
/// is drawn from the seed and the video's `key` (its path under the corpus
/// root, `Category/race/gender/id/name.mp4`), so the same key and parameters
/// give the same element wherever the file lies. `pipeline detect` cuts its
/// videos with this too.
pub fn extract_clip(
    path: &Path,
    key: &str,
    j: usize,
    p: &Params,
    mel: &MelSpectrogram,
) -> Result<Element, MediaError> {
    // The first clip's draw does not depend on how many clips there are.
    let purpose = if j == 0 {
        "window".to_string()
    } else {
        format!("window/{j}")
    };
    extract(path, &spec(p), mel, unit(p.seed, &purpose, key))
}

/// What the manifest says of one finished video (besides split and shard).
#[derive(Clone, Debug)]
struct ClipInfo {
    source_blake3: String,
    /// Per clip of the video: (window start in seconds, start frame).
    windows: Vec<(f64, usize)>,
    /// Per clip of the video: the sampled frames' times in the window.
    frame_times: Vec<Vec<f64>>,
    memo: PathBuf,
}

impl Stage for Elements {
    fn kind(&self) -> &'static str {
        "elements"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        Params::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let params = Params::from_json(ctx.params)
            .with_context(|| format!("stage {}: bad elements parameters", ctx.stage))?;
        let mut videos = Vec::new();
        for (name, root) in ctx.inputs {
            videos.extend(
                scan(root).with_context(|| format!("stage {}: reading input {name}", ctx.stage))?,
            );
        }
        videos.sort_by(|a, b| a.key.cmp(&b.key));
        videos.dedup_by(|a, b| a.key == b.key);
        if videos.is_empty() {
            bail!(
                "stage {}: no videos found under {} (expected <Category>/<race>/<gender>/<id>/<name>.mp4)",
                ctx.stage,
                ctx.inputs.values().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        std::fs::create_dir_all(ctx.items_dir)
            .with_context(|| format!("cannot create {}", ctx.items_dir.display()))?;
        let mine: Vec<&Video> = videos
            .iter()
            .enumerate()
            .filter(|(i, _)| owns(ctx.shard, *i))
            .map(|(_, v)| v)
            .collect();
        let log = ItemLog::open(ctx.step_dir, ctx.stage, mine.len())?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads.max(1))
            .build()
            .context("cannot start the worker threads")?;
        let mel = MelSpectrogram::new();
        let results: Vec<Result<(String, Result<ClipInfo, String>)>> = pool.install(|| {
            mine.par_iter()
                .map(|v| {
                    let r = item(v, &params, &mel, ctx.items_dir)?;
                    let outcome = match &r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => Outcome::Failed(e.clone()),
                    };
                    log.record(&v.key, &outcome)?;
                    Ok((v.key.clone(), r))
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        let outcomes: Vec<(String, Outcome)> = results
            .iter()
            .map(|(k, r)| {
                let o = match r {
                    Ok(_) => Outcome::Ok,
                    Err(e) => Outcome::Failed(e.clone()),
                };
                (k.clone(), o)
            })
            .collect();
        summarize(ctx.stage, &outcomes, params.max_failed_fraction)?;
        if ctx.shard.is_some() {
            return Ok(());
        }
        let split = split(ctx.workspace, ctx.stage, &params, &videos)?;
        let done: BTreeMap<String, ClipInfo> = results
            .into_iter()
            .filter_map(|(k, r)| r.ok().map(|c| (k, c)))
            .collect();
        write_outputs(ctx.output("elements")?, &params, &videos, &done, &split)
    }
}

/// The item's fingerprint: everything its memo depends on.
fn fingerprint(v: &Video, source_blake3: &str, p: &Params) -> String {
    let canon = serde_json::json!({
        "stage": "elements",
        "version": VERSION,
        "key": v.key,
        "source": source_blake3,
        "seed": p.seed,
        "clip_seconds": p.clip_seconds,
        "frame_size": p.frame_size,
        "min_seconds": p.min_seconds,
        "min_audio_coverage": p.min_audio_coverage,
        "clips_per_video": p.clips_per_video,
    });
    blake3::hash(canon.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// Computes (or finds in the memo) one video's element. The outer error is
/// an infrastructure failure (cannot write the memo) that stops the stage;
/// the inner one is the item's own failure.
fn item(
    v: &Video,
    p: &Params,
    mel: &MelSpectrogram,
    items_dir: &Path,
) -> Result<Result<ClipInfo, String>> {
    let source_blake3 = match file_blake3(&v.path) {
        Ok(h) => h,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let fp = fingerprint(v, &source_blake3, p);
    let memo = items_dir.join(format!("{fp}.safetensors"));
    let failed = items_dir.join(format!("{fp}.failed"));
    if let Ok(reason) = std::fs::read_to_string(&failed) {
        return Ok(Err(reason));
    }
    if let Some(info) = read_memo_info(&memo) {
        return Ok(Ok(ClipInfo {
            source_blake3,
            memo,
            ..info
        }));
    }
    let mut shard = ShardWriter::new(p.frame_size as usize);
    let mut windows = Vec::new();
    let mut frame_times = Vec::new();
    for j in 0..p.clips_per_video {
        match extract_clip(&v.path, &v.key, j, p, mel) {
            Err(e) => {
                let reason = e.to_string();
                write_atomic(&failed, reason.as_bytes())?;
                return Ok(Err(reason));
            }
            Ok(el) => {
                shard.push(&el.mel, &el.frames)?;
                windows.push((el.window.start_sec, el.window.start_frame));
                frame_times.push(el.frame_times.to_vec());
            }
        }
    }
    let list =
        |f: &dyn Fn(&(f64, usize)) -> String| windows.iter().map(f).collect::<Vec<_>>().join(",");
    let meta: HashMap<String, String> = [
        (
            "window_start_sec".to_string(),
            list(&|w| format!("{}", w.0)),
        ),
        ("start_frame".to_string(), list(&|w| w.1.to_string())),
        (
            "frame_times".to_string(),
            frame_times
                .iter()
                .map(|t| {
                    t.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect::<Vec<_>>()
                .join(";"),
        ),
    ]
    .into();
    shard.write(&memo, Some(meta))?;
    Ok(Ok(ClipInfo {
        source_blake3,
        windows,
        frame_times,
        memo,
    }))
}

/// The windows of a memoized item from its header alone, or None when the
/// memo is absent or unreadable (then the item is computed again).
fn read_memo_info(memo: &Path) -> Option<ClipInfo> {
    let mut f = std::fs::File::open(memo).ok()?;
    let (_, header) = read_header(&mut f, memo).ok()?;
    let meta = header.get("__metadata__")?;
    let secs = meta.get("window_start_sec")?.as_str()?.split(',');
    let starts = meta.get("start_frame")?.as_str()?.split(',');
    let windows = secs
        .zip(starts)
        .map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect::<Option<Vec<_>>>()?;
    let frame_times = meta
        .get("frame_times")?
        .as_str()?
        .split(';')
        .map(|clip| {
            clip.split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<f64>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    if frame_times.len() != windows.len() {
        return None;
    }
    Some(ClipInfo {
        source_blake3: String::new(),
        windows,
        frame_times,
        memo: memo.to_path_buf(),
    })
}

fn write_outputs(
    dir: &Path,
    p: &Params,
    videos: &[Video],
    done: &BTreeMap<String, ClipInfo>,
    split: &BTreeMap<String, Split>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let s = p.frame_size as usize;
    let k = p.clips_per_video;
    let clips: Vec<(&Video, usize)> = videos
        .iter()
        .filter(|v| done.contains_key(&v.key))
        .flat_map(|v| (0..k).map(move |j| (v, j)))
        .collect();
    let frames_len = frames_bytes(s);
    let mut records = Vec::with_capacity(clips.len());
    let mut loaded: Option<(PathBuf, Vec<u8>)> = None;
    for (shard_no, chunk) in clips.chunks(p.clips_per_shard).enumerate() {
        let mut shard = ShardWriter::new(s);
        for (v, j) in chunk {
            let info = &done[&v.key];
            if loaded.as_ref().map(|(p, _)| p) != Some(&info.memo) {
                let bytes = std::fs::read(&info.memo)
                    .with_context(|| format!("cannot read the memo {}", info.memo.display()))?;
                loaded = Some((info.memo.clone(), bytes));
            }
            let bytes = &loaded.as_ref().expect("loaded above").1;
            let damaged = || {
                format!(
                    "memo {} is damaged; delete it and rerun",
                    info.memo.display()
                )
            };
            let st = safetensors::SafeTensors::deserialize(bytes).with_context(damaged)?;
            let (m, f) = (st.tensor("mel")?, st.tensor("frames")?);
            let (m, f) = (
                m.data()
                    .get(j * MEL_BYTES..(j + 1) * MEL_BYTES)
                    .with_context(damaged)?,
                f.data()
                    .get(j * frames_len..(j + 1) * frames_len)
                    .with_context(damaged)?,
            );
            let (window_start_sec, start_frame) = *info.windows.get(*j).with_context(damaged)?;
            records.push(ClipRecord {
                key: if k == 1 {
                    v.key.clone()
                } else {
                    format!("{}#{j}", v.key)
                },
                identity: v.identity.clone(),
                race: v.race.clone(),
                gender: v.gender.clone(),
                category: v.category,
                audio_fake: v.category.audio_fake(),
                video_fake: v.category.y_video(),
                source_blake3: info.source_blake3.clone(),
                window_start_sec,
                start_frame: start_frame as u64,
                frame_times: Some(info.frame_times.get(*j).with_context(damaged)?.clone()),
                split: split.get(&v.identity).copied().unwrap_or(Split::Val),
                shard: shard_name(shard_no),
                index: shard.len() as u64,
            });
            shard.push_bytes(m, f)?;
        }
        shard.write(&dir.join(shard_name(shard_no)), None)?;
    }
    write_manifest(dir, &records)
}
