//! The element-set format, in one place: written by the elements stage (and
//! the models' synthetic test sets), read by the model data loader and by
//! `pipeline elements inspect`.
//!
//! A folder holds `manifest.jsonl` (one [`ClipRecord`] per line) and
//! safetensors shards `shard-NNNNN.safetensors`, each with two tensors:
//! `mel f32 [N, 128, 768]` (z-scored log-mel) and `frames u8 [N, 16, S, S, 3]`
//! (RGB). Clips are read one at a time with positioned reads, never a whole
//! shard.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::stages::category::Category;
use crate::util::write_atomic;

/// The manifest's file name inside an element folder.
pub const MANIFEST: &str = "manifest.jsonl";
/// Mel bins of an element.
pub const MEL_BINS: usize = 128;
/// Mel frames of an element (hop 64 at 16 kHz: 3.072 s).
pub const MEL_FRAMES: usize = 768;
/// Sampled video frames per element.
pub const N_FRAMES: usize = 16;
/// Seconds between mel frames (hop 64 at 16 kHz).
pub const MEL_HOP_SECONDS: f64 = 64.0 / 16_000.0;
/// Bytes of one element's mel (`f32` little-endian).
pub const MEL_BYTES: usize = MEL_BINS * MEL_FRAMES * 4;

/// Bytes of one element's frames at side `s`.
pub fn frames_bytes(s: usize) -> usize {
    N_FRAMES * s * s * 3
}

/// The name of shard `n` of a folder.
pub fn shard_name(n: usize) -> String {
    format!("shard-{n:05}.safetensors")
}

/// Which part of the identity-disjoint split a clip is in: training,
/// validation (model selection, early stopping), test (the reported metrics)
/// or fusion (training identities held out for stage 2's fusion refit, which
/// no other training reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    Fusion,
}

impl Split {
    /// The name written in manifests and split files.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Fusion => "fusion",
        }
    }
}

/// One line of `manifest.jsonl`. Fields are in the order they are written
/// (alphabetical, as the elements stage has always written them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    pub audio_fake: bool,
    pub category: Category,
    /// The sampled frames' times, seconds from the window start (written by
    /// elements version 4 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_times: Option<Vec<f64>>,
    pub gender: String,
    pub identity: String,
    /// The clip's row in its shard.
    pub index: u64,
    /// The video's path under its category folder, plus `#j` for the j-th
    /// clip of a video when there are several.
    pub key: String,
    pub race: String,
    pub shard: String,
    /// BLAKE3 of the video the clip was cut from.
    pub source_blake3: String,
    pub split: Split,
    pub start_frame: u64,
    pub video_fake: bool,
    pub window_start_sec: f64,
}

/// Collects the clips of one shard, then writes it.
#[derive(Debug)]
pub struct ShardWriter {
    frame_size: usize,
    mels: Vec<u8>,
    frames: Vec<u8>,
    n: usize,
}

impl ShardWriter {
    /// An empty shard of frames of side `frame_size`.
    pub fn new(frame_size: usize) -> Self {
        Self {
            frame_size,
            mels: Vec::new(),
            frames: Vec::new(),
            n: 0,
        }
    }

    /// Clips pushed so far (the next clip's `index`).
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds one clip: its mel as `f32` little-endian bytes ([`MEL_BYTES`])
    /// and its frames ([`frames_bytes`]).
    pub fn push_bytes(&mut self, mel: &[u8], frames: &[u8]) -> Result<()> {
        ensure!(
            mel.len() == MEL_BYTES && frames.len() == frames_bytes(self.frame_size),
            "an element is {MEL_BYTES} mel bytes and {} frame bytes, not {} and {}",
            frames_bytes(self.frame_size),
            mel.len(),
            frames.len()
        );
        self.mels.extend_from_slice(mel);
        self.frames.extend_from_slice(frames);
        self.n += 1;
        Ok(())
    }

    /// Adds one clip from its mel values.
    pub fn push(&mut self, mel: &[f32], frames: &[u8]) -> Result<()> {
        let bytes: Vec<u8> = mel.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&bytes, frames)
    }

    /// The shard's bytes, with `metadata` in its header when given.
    pub fn to_bytes(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        let s = self.frame_size;
        let tensors = vec![
            (
                "mel",
                TensorView::new(Dtype::F32, vec![self.n, MEL_BINS, MEL_FRAMES], &self.mels)?,
            ),
            (
                "frames",
                TensorView::new(Dtype::U8, vec![self.n, N_FRAMES, s, s, 3], &self.frames)?,
            ),
        ];
        Ok(safetensors::serialize(tensors, &metadata)?)
    }

    /// Writes the shard to `path` atomically.
    pub fn write(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        write_atomic(path, &self.to_bytes(metadata)?)
    }
}

/// Writes `dir/manifest.jsonl` atomically.
pub fn write_manifest(dir: &Path, records: &[ClipRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    write_atomic(&dir.join(MANIFEST), text.as_bytes())
}

/// Reads `dir/manifest.jsonl`.
pub fn read_manifest(dir: &Path) -> Result<Vec<ClipRecord>> {
    let mpath = dir.join(MANIFEST);
    let f = File::open(&mpath).with_context(|| {
        format!(
            "cannot open {}: is {} an element folder (the elements stage's output)?",
            mpath.display(),
            dir.display()
        )
    })?;
    let mut clips = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", mpath.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let c: ClipRecord = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: invalid clip record", mpath.display(), i + 1))?;
        clips.push(c);
    }
    Ok(clips)
}

/// Where one tensor of a shard lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u64,
    per_clip: u64,
}

#[derive(Debug)]
struct Shard {
    file: File,
    path: PathBuf,
    n: u64,
    mel: Slot,
    frames: Slot,
}

/// An opened element folder.
#[derive(Debug)]
pub struct ElementSet {
    pub clips: Vec<ClipRecord>,
    shards: HashMap<String, Shard>,
    /// Side of the square frames, `S`.
    pub frame_size: usize,
}

/// Reads the header of a safetensors file; returns where its data begin and
/// its entries (tensor name -> dtype, shape, offsets; `__metadata__`).
pub fn read_header(
    file: &mut File,
    path: &Path,
) -> Result<(u64, serde_json::Map<String, serde_json::Value>)> {
    let total = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    ensure!(
        n < 100 << 20 && n <= total.saturating_sub(8),
        "{}: header of {n} bytes is implausible",
        path.display()
    );
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&buf)
        .with_context(|| format!("{}: header is not JSON", path.display()))?;
    Ok((8 + n, map))
}

fn slot(
    header: &serde_json::Map<String, serde_json::Value>,
    data_start: u64,
    name: &str,
    dtype: &str,
    tail: &[Option<usize>],
    path: &Path,
) -> Result<(Slot, u64, Vec<usize>)> {
    #[derive(Deserialize)]
    struct Info {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    let v = header
        .get(name)
        .with_context(|| format!("{}: no tensor '{name}'", path.display()))?;
    let info: Info = serde_json::from_value(v.clone())
        .with_context(|| format!("{}: bad entry for '{name}'", path.display()))?;
    ensure!(
        info.dtype == dtype,
        "{}: '{name}' is {}, expected {dtype}",
        path.display(),
        info.dtype
    );
    let ok = info.shape.len() == tail.len() + 1
        && tail
            .iter()
            .zip(&info.shape[1..])
            .all(|(want, got)| want.is_none_or(|w| w == *got));
    ensure!(
        ok,
        "{}: '{name}' has shape {:?}",
        path.display(),
        info.shape
    );
    let n = info.shape[0] as u64;
    let bytes = info.data_offsets[1] - info.data_offsets[0];
    let per_clip = bytes.checked_div(n).unwrap_or(0);
    Ok((
        Slot {
            start: data_start + info.data_offsets[0],
            per_clip,
        },
        n,
        info.shape,
    ))
}

impl ElementSet {
    /// Opens `dir/manifest.jsonl` and every shard it names.
    pub fn open(dir: &Path) -> Result<Self> {
        let clips = read_manifest(dir)?;
        let mut shards = HashMap::new();
        let mut frame_size = None;
        for c in &clips {
            if shards.contains_key(&c.shard) {
                continue;
            }
            let path = dir.join(&c.shard);
            let mut file =
                File::open(&path).with_context(|| format!("opening shard {}", path.display()))?;
            let (data_start, header) = read_header(&mut file, &path)?;
            let (mel, n, _) = slot(
                &header,
                data_start,
                "mel",
                "F32",
                &[Some(MEL_BINS), Some(MEL_FRAMES)],
                &path,
            )?;
            let (frames, nf, shape) = slot(
                &header,
                data_start,
                "frames",
                "U8",
                &[Some(N_FRAMES), None, None, Some(3)],
                &path,
            )?;
            ensure!(
                n == nf,
                "{}: {n} mels but {nf} frame stacks",
                path.display()
            );
            let s = shape[2];
            ensure!(shape[3] == s, "{}: frames are not square", path.display());
            if *frame_size.get_or_insert(s) != s {
                bail!(
                    "{}: frame size {s} differs from the other shards",
                    path.display()
                );
            }
            shards.insert(
                c.shard.clone(),
                Shard {
                    file,
                    path,
                    n,
                    mel,
                    frames,
                },
            );
        }
        for c in &clips {
            let s = &shards[&c.shard];
            ensure!(
                c.index < s.n,
                "{}: clip {} has index {} but the shard holds {}",
                dir.join(MANIFEST).display(),
                c.key,
                c.index,
                s.n
            );
        }
        Ok(Self {
            clips,
            shards,
            frame_size: frame_size.unwrap_or(0),
        })
    }

    fn read(&self, clip: usize, which: fn(&Shard) -> Slot) -> Result<Vec<u8>> {
        let c = &self.clips[clip];
        let s = &self.shards[&c.shard];
        let slot = which(s);
        let mut buf = vec![0u8; slot.per_clip as usize];
        s.file
            .read_exact_at(&mut buf, slot.start + c.index * slot.per_clip)
            .with_context(|| format!("reading clip {} from {}", c.key, s.path.display()))?;
        Ok(buf)
    }

    /// The clip's log-mel, `128 * 768` values, bin-major.
    pub fn mel(&self, clip: usize) -> Result<Vec<f32>> {
        let raw = self.read(clip, |s| s.mel)?;
        Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The clip's frames, `16 * S * S * 3` bytes (RGB).
    pub fn frames(&self, clip: usize) -> Result<Vec<u8>> {
        self.read(clip, |s| s.frames)
    }

    /// Indices of the clips on one side of the split.
    pub fn split(&self, split: Split) -> Vec<usize> {
        (0..self.clips.len())
            .filter(|&i| self.clips[i].split == split)
            .collect()
    }

    /// The index of the clip with `key`.
    pub fn find(&self, key: &str) -> Option<usize> {
        self.clips.iter().position(|c| c.key == key)
    }
}

/// The list of videos beside an element set cut for `pipeline detect` (by
/// `pipeline-media elements extract`): one [`ExtractedInput`] per line, in the
/// order the files were given, the unreadable ones included.
pub const INPUTS: &str = "inputs.jsonl";

/// One video given to `pipeline-media elements extract`: where its clip is in
/// the manifest, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedInput {
    /// The file, as it was given.
    pub file: String,
    /// The key its window start was drawn with (see the extract command).
    pub key: String,
    /// Its category, when the file lies in a FakeAVCeleb-shaped folder; the
    /// manifest row of a file without one holds a placeholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Its clip's row in `manifest.jsonl`; `None` when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Writes `dir/inputs.jsonl` atomically.
pub fn write_inputs(dir: &Path, inputs: &[ExtractedInput]) -> Result<()> {
    let mut text = String::new();
    for i in inputs {
        text.push_str(&serde_json::to_string(i)?);
        text.push('\n');
    }
    write_atomic(&dir.join(INPUTS), text.as_bytes())
}

/// Reads `dir/inputs.jsonl`.
pub fn read_inputs(dir: &Path) -> Result<Vec<ExtractedInput>> {
    let path = dir.join(INPUTS);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: is {} an element folder cut by `pipeline-media elements extract`?",
            path.display(),
            dir.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: invalid input record", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, shard: &str, index: u64, split: Split) -> ClipRecord {
        ClipRecord {
            audio_fake: false,
            category: Category::Rvra,
            frame_times: Some((0..N_FRAMES).map(|k| k as f64 * 0.2).collect()),
            gender: "women".into(),
            identity: "id00001".into(),
            index,
            key: key.into(),
            race: "African".into(),
            shard: shard.into(),
            source_blake3: "ab".into(),
            split,
            start_frame: 3,
            video_fake: false,
            window_start_sec: 0.12,
        }
    }

    /// What one writer writes, the reader reads back clip by clip, across
    /// shards; a manifest row is one line with its keys in order.
    #[test]
    fn a_written_set_reads_back_clip_by_clip() {
        let dir = tempfile::tempdir().unwrap();
        let s = 4;
        let mut records = Vec::new();
        let mut want = Vec::new();
        for shard_no in 0..2 {
            let mut w = ShardWriter::new(s);
            for i in 0..3 {
                let v = (shard_no * 3 + i) as f32;
                let mel: Vec<f32> = (0..MEL_BINS * MEL_FRAMES).map(|k| v + k as f32).collect();
                let frames = vec![(v as u8) * 10; frames_bytes(s)];
                records.push(record(
                    &format!("k{shard_no}{i}"),
                    &shard_name(shard_no),
                    w.len() as u64,
                    if i == 1 { Split::Test } else { Split::Train },
                ));
                w.push(&mel, &frames).unwrap();
                want.push((mel, frames));
            }
            w.write(&dir.path().join(shard_name(shard_no)), None)
                .unwrap();
        }
        write_manifest(dir.path(), &records).unwrap();
        let set = ElementSet::open(dir.path()).unwrap();
        assert_eq!(set.clips, records);
        assert_eq!(set.frame_size, s);
        for (i, (mel, frames)) in want.iter().enumerate() {
            assert_eq!(&set.mel(i).unwrap(), mel);
            assert_eq!(&set.frames(i).unwrap(), frames);
        }
        assert_eq!(set.split(Split::Test), vec![1, 4]);
        assert_eq!(set.find("k12"), Some(5));
        let line = std::fs::read_to_string(dir.path().join(MANIFEST)).unwrap();
        let first = line.lines().next().unwrap();
        assert!(
            first.starts_with(r#"{"audio_fake":false,"category":"RealVideo-RealAudio","#),
            "{first}"
        );
        assert!(first.ends_with(r#""window_start_sec":0.12}"#), "{first}");
    }

    #[test]
    fn a_bad_element_or_a_short_shard_is_refused() {
        let mut w = ShardWriter::new(4);
        let e = w.push(&[0.0; 10], &[0; 10]).unwrap_err().to_string();
        assert!(e.contains("not 40 and 10"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        w.push(&vec![0.0; MEL_BINS * MEL_FRAMES], &vec![0; frames_bytes(4)])
            .unwrap();
        w.write(&dir.path().join(shard_name(0)), None).unwrap();
        write_manifest(dir.path(), &[record("a", &shard_name(0), 1, Split::Val)]).unwrap();
        let e = ElementSet::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("has index 1 but the shard holds 1"), "{e}");
        let e = ElementSet::open(&dir.path().join("nothing")).unwrap_err();
        assert!(format!("{e:#}").contains("an element folder"), "{e:#}");
    }
}
