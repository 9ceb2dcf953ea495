//! `pipeline-media check-corpus`: the part of `pipeline check` that needs
//! FFmpeg. It scans FakeAVCeleb-shaped corpora as the media stages do, and
//! answers on standard output (JSON, [`CorpusReport`]):
//!
//! - which files cannot be used: a video that does not open, or lacks a
//!   video or an audio stream (`--probe`), and a video `meta_data.csv` lists
//!   that is not there;
//! - with `--elements-params`, the clips the elements stage would make and
//!   the split it would give them, computed by the stage's own split
//!   function ([`super::split::split`]); `--plan-voiceclones` adds the two
//!   voice clones the seedvc stage makes of every RVRA video, for a check
//!   that runs before seedvc has.
//!
//! The probe reads headers only, in parallel, and is memoized in `--memo`
//! by the BLAKE3 of each file's bytes, so a file copied, moved or fetched
//! again is not probed again, and a changed one always is. The hashes come
//! from the engine (`--hashes`: what its stat cache already holds for a
//! recorded corpus, so nothing is read twice); a file it gave none for is
//! hashed here, through the memo's own stat cache (device, inode, size,
//! mtime, ctime: the rule the engine's cache trusts, since a user cannot set
//! ctime). The memo is only a cache: one it cannot read, or of another
//! [`PROBE_VERSION`], is started afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{scan, Category, Video};
use super::items::file_blake3;
use super::split::split;
use crate::media::decode::probe;
use crate::media::MediaError;
use crate::util::write_atomic;
use pipeline_core::hash::StatKey;
use pipeline_core::stages::corpus_check::{BadFile, CorpusReport, PlannedClip};

/// Bumped when the probe would judge a file differently.
/// 2: keyed by content (BLAKE3), not by path.
const PROBE_VERSION: u32 = 2;

/// FakeAVCeleb's list of its videos, at the top of the corpus.
const META_DATA: &str = "meta_data.csv";

/// Arguments of `pipeline-media check-corpus`.
#[derive(clap::Args)]
pub struct CheckCorpusArgs {
    /// The stage the corpus is checked for (named in messages).
    #[arg(long)]
    stage: String,
    /// The workspace (a split file is relative to it).
    #[arg(long)]
    workspace: PathBuf,
    /// Open every video and look for both streams.
    #[arg(long)]
    probe: bool,
    /// The probe's memo file (created; read first when it exists).
    #[arg(long, requires = "probe")]
    memo: Option<PathBuf>,
    /// A JSON object `{path: blake3}` of the files whose hash the caller
    /// knows (the engine's stat cache).
    #[arg(long, requires = "probe")]
    hashes: Option<PathBuf>,
    /// Only the videos of these categories (default: all).
    #[arg(long)]
    category: Vec<String>,
    /// The elements stage's parameters (JSON text): report the clips it
    /// would make of the corpus and their split.
    #[arg(long)]
    elements_params: Option<String>,
    /// Add the voice clones the seedvc stage makes of every RVRA video.
    #[arg(long, requires = "elements_params")]
    plan_voiceclones: bool,
    /// Threads for the probe (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// The corpus roots (FakeAVCeleb-shaped folders).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// What the memo knows of one file's bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Probed {
    /// Why the file cannot be used; `None`: it can.
    problem: Option<String>,
    /// How many times these bytes were probed (stays 1 while the memo
    /// answers for them).
    probes: u32,
}

/// A file's stat key and the hash of its bytes then.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Seen {
    stat: (u64, u64, u64, i64, i64),
    blake3: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    version: u32,
    /// BLAKE3 -> the probe's answer.
    probes: BTreeMap<String, Probed>,
    /// Path -> its hash, for files the engine gave no hash for.
    files: BTreeMap<String, Seen>,
}

impl Memo {
    fn load(path: &Path) -> Memo {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
            .filter(|m| m.version == PROBE_VERSION)
            .unwrap_or(Memo {
                version: PROBE_VERSION,
                ..Memo::default()
            })
    }
}

/// The stat key of a file, as the memo compares it (the engine's rule).
fn stat_of(m: &std::fs::Metadata) -> (u64, u64, u64, i64, i64) {
    let k = StatKey::of(m);
    (k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns)
}

/// Why `path` cannot be used as a clip, from its headers; `None` when it can.
fn probe_problem(path: &Path) -> Option<String> {
    match probe(path) {
        Err(MediaError::Open { reason, .. }) => Some(format!(
            "does not open as media ({reason}): a truncated or corrupt file; download or copy it \
             again"
        )),
        Err(e) => Some(e.to_string()),
        Ok(p) => match (&p.video, &p.audio) {
            (None, _) => Some("has no video stream".into()),
            (_, None) => Some("has no audio stream".into()),
            (Some(v), _) if v.frames == 0 => Some("its video stream holds no frames".into()),
            _ => None,
        },
    }
}

/// Probes every video whose bytes the memo has not seen. Returns the
/// problems by path, how many contents were probed (once each, however many
/// files hold them) and how many files the memo answered for.
fn probe_all(
    videos: &[&Video],
    memo_file: Option<&Path>,
    known: &BTreeMap<String, String>,
    roots: &[PathBuf],
) -> Result<(BTreeMap<PathBuf, String>, usize, usize)> {
    let mut memo = memo_file.map(Memo::load).unwrap_or_default();
    // Each file's hash: the engine's, the memo's (stat unchanged), or read now.
    let hashed: Vec<(String, Option<Seen>)> = videos
        .par_iter()
        .map(|v| {
            let key = v.path.to_string_lossy().into_owned();
            let Ok(meta) = std::fs::metadata(&v.path) else {
                return (key, None);
            };
            let stat = stat_of(&meta);
            let blake3 = match known.get(&key) {
                Some(h) => Some(h.clone()),
                None => match memo.files.get(&key).filter(|s| s.stat == stat) {
                    Some(s) => Some(s.blake3.clone()),
                    None => file_blake3(&v.path).ok(),
                },
            };
            (key, blake3.map(|blake3| Seen { stat, blake3 }))
        })
        .collect();
    // Every content not seen before is probed once, whichever file has it.
    let mut todo: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, seen) in &hashed {
        if let Some(s) = seen {
            if !memo.probes.contains_key(&s.blake3) {
                todo.entry(s.blake3.as_str()).or_insert(key.as_str());
            }
        }
    }
    let answers: Vec<(String, Option<String>)> = todo
        .par_iter()
        .map(|(hash, key)| (hash.to_string(), probe_problem(Path::new(key))))
        .collect();
    let probed = answers.len();
    let probed_now: BTreeSet<String> = answers.iter().map(|(h, _)| h.clone()).collect();
    for (hash, problem) in answers {
        let probes = memo.probes.get(&hash).map_or(0, |p| p.probes) + 1;
        memo.probes.insert(hash, Probed { problem, probes });
    }
    let mut problems = BTreeMap::new();
    let seen_paths: BTreeSet<&str> = hashed.iter().map(|(k, _)| k.as_str()).collect();
    let mut files_changed = false;
    let mut reused = 0;
    // A file under these roots that is gone is forgotten.
    memo.files.retain(|k, _| {
        let keep =
            seen_paths.contains(k.as_str()) || !roots.iter().any(|r| Path::new(k).starts_with(r));
        files_changed |= !keep;
        keep
    });
    for (key, seen) in hashed {
        let Some(seen) = seen else {
            problems.insert(
                PathBuf::from(&key),
                "cannot be read (it vanished while checked)".into(),
            );
            continue;
        };
        if !probed_now.contains(&seen.blake3) {
            reused += 1;
        }
        if let Some(p) = &memo.probes[&seen.blake3].problem {
            problems.insert(PathBuf::from(&key), p.clone());
        }
        if !known.contains_key(&key) && memo.files.get(&key) != Some(&seen) {
            memo.files.insert(key, seen);
            files_changed = true;
        }
    }
    if let Some(file) = memo_file {
        if probed > 0 || files_changed || !file.exists() {
            write_atomic(file, &serde_json::to_vec(&memo)?)
                .with_context(|| format!("writing the probe memo {}", file.display()))?;
        }
    }
    Ok((problems, probed, reused))
}

/// The videos `root/meta_data.csv` lists that are not there (and its lines
/// that name no video), when the corpus has such a file.
fn listed_but_missing(root: &Path, categories: &[Category]) -> Result<Vec<BadFile>> {
    let csv = root.join(META_DATA);
    let Ok(text) = std::fs::read_to_string(&csv) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields = csv_fields(line);
        // source,target1,target2,method,category,type,race,gender,path,<folder>
        let (Some(name), Some(folder)) = (fields.get(8), fields.get(9)) else {
            out.push(BadFile {
                path: csv.clone(),
                problem: format!(
                    "line {}: expected 10 columns (source,target1,target2,method,category,type,\
                     race,gender,path,folder), found {}",
                    n + 1,
                    fields.len()
                ),
            });
            continue;
        };
        // The folder column starts with the corpus's own name
        // (`FakeAVCeleb/RealVideo-RealAudio/...`): resolve from the category on.
        let parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
        let Some(at) = parts
            .iter()
            .position(|p| Category::from_folder(p).is_some())
        else {
            out.push(BadFile {
                path: csv.clone(),
                problem: format!("line {}: folder '{folder}' names no category folder", n + 1),
            });
            continue;
        };
        let category = Category::from_folder(parts[at]).expect("found above");
        if !categories.is_empty() && !categories.contains(&category) {
            continue;
        }
        let mut path = root.to_path_buf();
        path.extend(&parts[at..]);
        path.push(name);
        if !path.is_file() {
            out.push(BadFile {
                path,
                problem: format!("listed in {} line {} but missing", csv.display(), n + 1),
            });
        }
    }
    Ok(out)
}

/// The fields of one CSV line, trimmed: a field in double quotes may hold
/// commas, and `""` inside it stands for one quote (RFC 4180).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_string()),
            c => field.push(c),
        }
    }
    fields.push(field.trim().to_string());
    fields
}

/// The voice clones the seedvc stage makes of an RVRA video, under the keys
/// it writes them at.
fn planned_voiceclones(v: &Video) -> [Video; 2] {
    [Category::RvfaSvc, Category::RvfaVc].map(|category| Video {
        key: v.key_as(category),
        category,
        ..v.clone()
    })
}

/// Runs `check-corpus` and prints its report.
pub fn run(a: CheckCorpusArgs) -> Result<()> {
    let categories = a
        .category
        .iter()
        .map(|c| c.parse::<Category>())
        .collect::<Result<Vec<_>>>()?;
    let mut videos = Vec::new();
    let mut bad = Vec::new();
    for root in &a.inputs {
        videos.extend(
            scan(root)
                .with_context(|| format!("stage {}: reading {}", a.stage, root.display()))?
                .into_iter()
                .filter(|v| categories.is_empty() || categories.contains(&v.category)),
        );
        bad.extend(listed_but_missing(root, &categories)?);
    }
    videos.sort_by(|x, y| x.key.cmp(&y.key));
    videos.dedup_by(|x, y| x.key == y.key);
    let mut report = CorpusReport {
        videos: videos.len(),
        ..CorpusReport::default()
    };
    let mut problems = BTreeMap::new();
    if a.probe {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(a.threads.unwrap_or(0))
            .build()
            .context("cannot start the probe's threads")?;
        let all: Vec<&Video> = videos.iter().collect();
        let known: BTreeMap<String, String> = match &a.hashes {
            Some(f) => serde_json::from_slice(
                &std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
            )
            .with_context(|| format!("{}: expected {{\"path\": \"blake3\"}}", f.display()))?,
            None => BTreeMap::new(),
        };
        let (p, probed, reused) =
            pool.install(|| probe_all(&all, a.memo.as_deref(), &known, &a.inputs))?;
        problems = p;
        report.probed = probed;
        report.reused = reused;
    }
    bad.extend(problems.iter().map(|(path, problem)| BadFile {
        path: path.clone(),
        problem: problem.clone(),
    }));
    if let Some(text) = &a.elements_params {
        let params = serde_json::from_str(text)
            .map_err(anyhow::Error::from)
            .and_then(|v| super::media_params::ElementsParams::from_json(&v))
            .with_context(|| format!("stage {}: bad elements parameters", a.stage))?;
        let usable: Vec<Video> = videos
            .iter()
            .filter(|v| !problems.contains_key(&v.path))
            .cloned()
            .collect();
        let mut all = videos.clone();
        let mut kept = usable.clone();
        if a.plan_voiceclones {
            for v in videos.iter().filter(|v| v.category == Category::Rvra) {
                all.extend(planned_voiceclones(v));
            }
            for v in usable.iter().filter(|v| v.category == Category::Rvra) {
                kept.extend(planned_voiceclones(v));
            }
            all.sort_by(|x, y| x.key.cmp(&y.key));
        }
        match split(&a.workspace, &a.stage, &params, &all) {
            Ok(parts) => {
                report.clips = Some(
                    kept.iter()
                        .flat_map(|v| {
                            let clip = PlannedClip {
                                identity: v.identity.clone(),
                                category: v.category,
                                split: parts
                                    .get(&v.identity)
                                    .copied()
                                    .unwrap_or(crate::elementset::Split::Val),
                            };
                            std::iter::repeat_n(clip, params.clips_per_video)
                        })
                        .collect(),
                )
            }
            Err(e) => report.split_error = Some(format!("{e:#}")),
        }
    }
    report.bad = bad;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out).context("writing the report")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_field_in_quotes_keeps_its_commas_and_quotes() {
        assert_eq!(
            csv_fields(r#"a, "b, c" ,"say ""hi""",,d"#),
            ["a", "b, c", r#"say "hi""#, "", "d"]
        );
        assert_eq!(csv_fields(""), [""]);
        assert_eq!(
            csv_fields("id1,-,-,real,A,RealVideo-RealAudio,\"Asian (East)\",men,00001.mp4,F/x"),
            [
                "id1",
                "-",
                "-",
                "real",
                "A",
                "RealVideo-RealAudio",
                "Asian (East)",
                "men",
                "00001.mp4",
                "F/x"
            ]
        );
    }
}
