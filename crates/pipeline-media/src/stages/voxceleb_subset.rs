//! The `voxceleb_subset` stage: the VoxCeleb2 utterances of the input
//! corpus's real identities, as mono wav files
//! `vox2/<idNNNNN>/<youtube_id>/<segment>.wav`, taken from a Hugging Face
//! dataset of WebDataset tar shards (`gaunernst/voxceleb2-dev-wds`: 779
//! shards of ~100 MB, members `<id>/<yt>/<seg>.m4a` and `.cls`).
//!
//! The items are the shards. Each is listed through the hub's HTTP API,
//! downloaded (resumable, verified against the hub's LFS sha256) into the
//! items folder, read member by member, and only the members of the kept
//! identities are converted; the shard's wavs go into a memo folder named
//! by the shard and its fingerprint, which appears whole (a rename) once
//! the shard is done, and the tar is deleted. A rerun after a crash fetches
//! only the shards without a memo; a download cut short resumes from its
//! `.part` file. A memo records which identities the shard holds and which
//! it converted, so a changed identity set fetches again only the shards
//! that hold an identity their memo lacks (a removed one is left out). The
//! gathering links (or copies) every memo's wavs into the output and writes
//! `index.json` (per shard: utterances kept and failed).
//!
//! The hub's address is the `endpoint` parameter unless the environment
//! variable `HF_ENDPOINT` is set (a mirror; the stage's manifest lists it in
//! `env:`). `HF_TOKEN`, when set, is sent as a bearer token; it never enters
//! the parameters, the memo, the item log or a message. The HTTP client, the
//! hub's API and archive-path checks belong to `pipeline-fetch`; this module
//! knows the WebDataset member layout and the conversion.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use pipeline_fetch::hub::{dataset_file_url, list_dataset_files, token_from_env, HubFile};
use pipeline_fetch::{safe_entry_path, Checksum, Http, HttpOptions};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{identities, is_identity};
use super::items::{owns, summarize, ItemLog, ItemRow, ItemStatus, Outcome};
use super::{Stage, StageContext};
use crate::media::decode::decode_audio_mono;
use crate::media::wav::write_pcm16;
use crate::util::write_atomic;

/// 1: the first version.
const VERSION: u32 = super::versions::VOXCELEB_SUBSET;

/// Keys a shard's memo: bumped when the wav bytes made from the same shard
/// would change (the conversion, the member layout) or the memo's manifest
/// does, so that a change of the stage's bookkeeping alone (`VERSION`) does
/// not fetch 80 GB again. 2: the memo no longer depends on the identity set
/// (its manifest names the identities present and converted).
const SHARD_VERSION: u32 = 2;

/// The environment variable that names a mirror of the hub.
const ENDPOINT_VAR: &str = "HF_ENDPOINT";

/// The memo's record of a finished shard, written last inside its folder.
const MANIFEST: &str = "manifest.json";

/// The built-in `voxceleb_subset` kind.
pub struct VoxcelebSubset;

type Params = super::media_params::VoxcelebSubsetParams;

impl Stage for VoxcelebSubset {
    fn kind(&self) -> &'static str {
        "voxceleb_subset"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        Params::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = Params::from_json(ctx.params)
            .with_context(|| format!("stage {}: bad voxceleb_subset parameters", ctx.stage))?;
        let kept = identities(ctx.input("fakeavceleb")?, p.identities_from)?;
        let endpoint = endpoint(&p)?;
        let token = token_from_env();
        let http = Http::new(HttpOptions {
            retries: p.retries,
            bearer_token: token.clone(),
            ..HttpOptions::default()
        })?;
        let mut shards = list_dataset_files(&http, &endpoint, &p.repo, &p.revision, &p.pattern)
            .with_context(|| {
                format!(
                    "cannot list the files of the dataset {} (revision {}) at {endpoint}: check \
                     `repo` and `revision`, the address (`endpoint`, or {ENDPOINT_VAR} when set), \
                     and for a gated dataset set HF_TOKEN",
                    p.repo, p.revision
                )
            })?;
        if shards.is_empty() {
            bail!(
                "the dataset {} (revision {}) at {endpoint} has no file matching `pattern` {:?}",
                p.repo,
                p.revision,
                p.pattern
            );
        }
        shards.sort_by(|a, b| a.path.cmp(&b.path));
        eprintln!(
            "{}: {} identities of {}; {} shards of {} (revision {}) from {endpoint}{}",
            ctx.stage,
            kept.len(),
            p.identities_from.folder(),
            shards.len(),
            p.repo,
            p.revision,
            if token.is_some() {
                ", with HF_TOKEN"
            } else {
                ""
            }
        );
        std::fs::create_dir_all(ctx.items_dir)
            .with_context(|| format!("cannot create {}", ctx.items_dir.display()))?;
        let fetcher = Fetcher {
            p: &p,
            http: &http,
            endpoint: &endpoint,
            kept: &kept,
            items_dir: ctx.items_dir,
        };
        let mine: Vec<&HubFile> = shards
            .iter()
            .enumerate()
            .filter(|(i, _)| owns(ctx.shard, *i))
            .map(|(_, s)| s)
            .collect();
        let log = ItemLog::open(ctx.step_dir, ctx.stage, mine.len())?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(p.concurrency)
            .build()
            .context("cannot start the shard threads")?;
        let results: Vec<Result<(String, Result<Memo, String>)>> = pool.install(|| {
            mine.par_iter()
                .map(|shard| {
                    let r = fetcher.shard(shard);
                    let o = match &r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => Outcome::Failed(e.clone()),
                    };
                    log.record(&shard.path, &o)?;
                    Ok((shard.path.clone(), r))
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        // A missing shard is missing speakers' data: every shard must come.
        let failed: Vec<(&String, &String)> = results
            .iter()
            .filter_map(|(k, r)| r.as_ref().err().map(|e| (k, e)))
            .collect();
        if let Some((first, why)) = failed.first() {
            bail!(
                "{} of {} shards failed; the finished ones are kept and a rerun fetches only \
                 the rest; first: {first}: {why}",
                failed.len(),
                results.len()
            );
        }
        let memos: Vec<Memo> = results.into_iter().filter_map(|(_, r)| r.ok()).collect();
        record_utterances(ctx, &memos, p.max_failed_fraction)?;
        if ctx.shard.is_some() {
            return Ok(());
        }
        gather(ctx.output("vox2")?, &p, &kept, &memos)
    }
}

/// The hub's address: `HF_ENDPOINT` when set, else the parameter; without
/// a trailing slash.
fn endpoint(p: &Params) -> Result<String> {
    let from_env = std::env::var(ENDPOINT_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (e, source) = match from_env {
        Some(v) => (v, ENDPOINT_VAR),
        None => (p.endpoint.clone(), "parameter 'endpoint'"),
    };
    let e = e.trim().trim_end_matches('/').to_string();
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        bail!("{source} ({e:?}) must be an http:// or https:// address");
    }
    Ok(e)
}

/// Writes every failed utterance (the memoized shards' too) to
/// `utterances.jsonl` in the step folder, in the item log's row format, and
/// fails when more than `max_failed_fraction` of the kept ones failed.
fn record_utterances(
    ctx: &StageContext<'_>,
    memos: &[Memo],
    max_failed_fraction: f64,
) -> Result<()> {
    let mut outcomes = Vec::new();
    let mut rows = String::new();
    for m in memos {
        for key in &m.manifest.kept {
            outcomes.push((key.clone(), Outcome::Ok));
        }
        for f in &m.manifest.failed {
            rows += &serde_json::to_string(&ItemRow {
                item: &f.key,
                status: ItemStatus::Failed,
                reason: Some(&f.reason),
            })?;
            rows.push('\n');
            outcomes.push((f.key.clone(), Outcome::Failed(f.reason.clone())));
        }
    }
    let path = ctx.step_dir.join("utterances.jsonl");
    write_atomic(&path, rows.as_bytes())?;
    summarize(
        &format!("{} utterances", ctx.stage),
        &outcomes,
        max_failed_fraction,
    )
}

/// Writes the output from the memos: each kept utterance linked (or copied
/// where the file system cannot link) into `out`, and `index.json`.
fn gather(out: &Path, p: &Params, kept: &BTreeSet<String>, memos: &[Memo]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut index = Index {
        repo: p.repo.clone(),
        revision: p.revision.clone(),
        sample_rate: p.sample_rate,
        identities_from: p.identities_from.folder().to_string(),
        identities: kept.len(),
        utterances: 0,
        duplicates: 0,
        shards: Vec::new(),
    };
    let mut speakers = BTreeSet::new();
    for m in memos {
        for key in &m.manifest.kept {
            let rel = format!("{key}.wav");
            let dest = out.join(&rel);
            if dest.exists() {
                // The same key in two shards: the first shard's copy stays.
                index.duplicates += 1;
                continue;
            }
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let src = m.dir.join(&rel);
            if std::fs::hard_link(&src, &dest).is_err() {
                std::fs::copy(&src, &dest).with_context(|| {
                    format!("cannot copy {} to {}", src.display(), dest.display())
                })?;
            }
            index.utterances += 1;
            if let Some(id) = key.split('/').next() {
                speakers.insert(id.to_string());
            }
        }
        index.shards.push(ShardIndex {
            path: m.manifest.shard.clone(),
            kept: m.manifest.kept.len(),
            failed: m.manifest.failed.len(),
        });
    }
    if index.utterances == 0 {
        bail!(
            "none of the {} identities of {} has an utterance in the {} shards of {}: check \
             `identities_from` and that the dataset is VoxCeleb2 (members `idNNNNN/<youtube id>/\
             <segment>.m4a`)",
            kept.len(),
            p.identities_from.folder(),
            memos.len(),
            p.repo
        );
    }
    let missing = kept.len() - speakers.len();
    eprintln!(
        "voxceleb_subset: {} utterances of {} identities written ({} identities have none{})",
        index.utterances,
        speakers.len(),
        missing,
        if index.duplicates > 0 {
            format!(", {} duplicate keys skipped", index.duplicates)
        } else {
            String::new()
        }
    );
    write_atomic(&out.join("index.json"), &serde_json::to_vec_pretty(&index)?)
}

/// `index.json` beside the output's identity folders.
#[derive(Serialize)]
struct Index {
    repo: String,
    revision: String,
    sample_rate: u32,
    identities_from: String,
    /// Identities looked for.
    identities: usize,
    /// Utterances written.
    utterances: usize,
    /// Keys met again in a later shard, not written twice.
    duplicates: usize,
    shards: Vec<ShardIndex>,
}

#[derive(Serialize)]
struct ShardIndex {
    path: String,
    kept: usize,
    failed: usize,
}

/// What a finished shard left in its memo folder.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The shard's path in the dataset.
    shard: String,
    /// Identities with audio in the shard, kept or not.
    present: BTreeSet<String>,
    /// The present identities that were kept, so converted, when the memo
    /// was made: the memo serves any identity set whose present members
    /// are all among them.
    converted: BTreeSet<String>,
    /// Keys (`id/yt/seg`) whose `.wav` the folder holds, in archive order.
    kept: Vec<String>,
    failed: Vec<FailedUtterance>,
    skipped: Skipped,
}

#[derive(Debug, Serialize, Deserialize)]
struct FailedUtterance {
    key: String,
    reason: String,
}

/// Members passed over, by why.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Skipped {
    /// Audio of identities not kept.
    other_identities: u64,
    /// Labels (`.cls`), read past.
    labels: u64,
    /// Members of other kinds or of another layout than `id/yt/seg.ext`.
    unknown_members: u64,
    /// Links, folders and other entries that are not plain files.
    not_files: u64,
    /// A key met twice in the shard: the first one stays.
    duplicates: u64,
}

/// A finished shard: its memo folder and what it holds.
struct Memo {
    dir: PathBuf,
    manifest: Manifest,
}

impl Manifest {
    /// The kept identities the shard holds that this memo did not convert.
    fn lacks(&self, kept: &BTreeSet<String>) -> Vec<&String> {
        self.present
            .iter()
            .filter(|id| kept.contains(*id) && !self.converted.contains(*id))
            .collect()
    }

    /// This memo as seen by the identity set `kept`: the utterances of
    /// identities no longer kept are left out.
    fn restricted_to(mut self, kept: &BTreeSet<String>) -> Manifest {
        let keeps = |key: &str| key.split('/').next().is_some_and(|id| kept.contains(id));
        self.kept.retain(|k| keeps(k));
        self.failed.retain(|f| keeps(&f.key));
        self
    }
}

/// What one tar member is, by its name.
#[derive(Debug, PartialEq, Eq)]
enum Member {
    /// `<id>/<yt>/<seg>.m4a`: an utterance, keyed `id/yt/seg`.
    Audio {
        identity: String,
        key: String,
    },
    /// `<id>/<yt>/<seg>.cls`: its label.
    Label,
    Unknown,
}

/// Reads a member's name as WebDataset does (the key is the name up to the
/// first dot of its last part, the extension the rest), accepting only
/// VoxCeleb2's `idNNNNN/<yt>/<seg>` keys of plain path parts.
fn member(name: &Path) -> Member {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Member::Unknown,
            },
            Component::CurDir => {}
            _ => return Member::Unknown,
        }
    }
    let [identity, yt, file] = parts[..] else {
        return Member::Unknown;
    };
    let Some((seg, ext)) = file.split_once('.') else {
        return Member::Unknown;
    };
    if !is_identity(identity) || yt.is_empty() || seg.is_empty() {
        return Member::Unknown;
    }
    match ext {
        "m4a" => Member::Audio {
            identity: identity.to_string(),
            key: format!("{identity}/{yt}/{seg}"),
        },
        "cls" => Member::Label,
        _ => Member::Unknown,
    }
}

/// Fetches and converts shards; shared by the shard threads.
struct Fetcher<'a> {
    p: &'a Params,
    http: &'a Http,
    endpoint: &'a str,
    kept: &'a BTreeSet<String>,
    items_dir: &'a Path,
}

impl Fetcher<'_> {
    /// The memo of one shard, made if missing; any error is this shard's
    /// failure, with its reason.
    fn shard(&self, f: &HubFile) -> Result<Memo, String> {
        self.try_shard(f).map_err(|e| format!("{e:#}"))
    }

    /// The memo folder's name: the shard's path (readable) and a fingerprint
    /// of its content and of how it is converted (not of the identities
    /// kept: the manifest says which those were).
    fn memo_name(&self, f: &HubFile) -> String {
        let content = match &f.sha256 {
            Some(sha) => format!("sha256:{sha}"),
            // No LFS hash: the revision and size stand for the content.
            None => format!("{}@{}:{}", self.p.repo, self.p.revision, f.size),
        };
        let fp = blake3::hash(
            serde_json::json!({
                "version": SHARD_VERSION,
                "content": content,
                "sample_rate": self.p.sample_rate,
            })
            .to_string()
            .as_bytes(),
        )
        .to_hex();
        let stem = f.path.trim_end_matches(".tar").replace(['/', '\\'], "_");
        format!("{stem}-{}", &fp[..16])
    }

    fn try_shard(&self, f: &HubFile) -> Result<Memo> {
        let name = self.memo_name(f);
        let dir = self.items_dir.join(&name);
        let tar = self.items_dir.join(format!("{name}.tar"));
        if let Some(manifest) = read_manifest(&dir) {
            let lacks = manifest.lacks(self.kept);
            if lacks.is_empty() {
                // A crash between the memo's rename and the tar's removal.
                let _ = std::fs::remove_file(&tar);
                let manifest = manifest.restricted_to(self.kept);
                return Ok(Memo { dir, manifest });
            }
            eprintln!(
                "voxceleb_subset: shard {} is fetched again: it holds {} kept identities its \
                 memo lacks ({})",
                f.path,
                lacks.len(),
                lacks
                    .iter()
                    .take(5)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let url = dataset_file_url(self.endpoint, &self.p.repo, &self.p.revision, &f.path);
        let checksum = f.sha256.clone().map(Checksum::Sha256);
        self.http
            .download(&url, &tar, checksum.as_ref(), &|_, _| {})
            .with_context(|| format!("cannot download shard {} from {url}", f.path))?;
        let size = std::fs::metadata(&tar)
            .with_context(|| format!("cannot read {}", tar.display()))?
            .len();
        if size != f.size {
            let _ = std::fs::remove_file(&tar);
            bail!(
                "shard {}: downloaded {size} bytes where the hub lists {}; it will be fetched \
                 again on the next run",
                f.path,
                f.size
            );
        }
        let partial = self.items_dir.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let manifest = self
            .convert(&f.path, &tar, &partial)
            .with_context(|| format!("shard {} ({})", f.path, tar.display()))?;
        write_atomic(&partial.join(MANIFEST), &serde_json::to_vec(&manifest)?)?;
        // A folder without a manifest is an older crash's leftover.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;
        let _ = std::fs::remove_file(&tar);
        Ok(Memo { dir, manifest })
    }

    /// Reads the tar at `tar` member by member and writes the kept
    /// identities' utterances as wav files under `out` (`id/yt/seg.wav`).
    fn convert(&self, shard: &str, tar: &Path, out: &Path) -> Result<Manifest> {
        let file = File::open(tar).with_context(|| format!("cannot open {}", tar.display()))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut manifest = Manifest {
            shard: shard.to_string(),
            present: BTreeSet::new(),
            converted: BTreeSet::new(),
            kept: Vec::new(),
            failed: Vec::new(),
            skipped: Skipped::default(),
        };
        let mut seen = BTreeSet::new();
        let entries = archive.entries().context("not a tar archive")?;
        for entry in entries {
            let mut entry = entry.context("a damaged tar member")?;
            if !entry.header().entry_type().is_file() {
                manifest.skipped.not_files += 1;
                continue;
            }
            let name = entry.path().context("a tar member's name")?.into_owned();
            let (identity, key) = match member(&name) {
                Member::Audio { identity, key } => (identity, key),
                Member::Label => {
                    manifest.skipped.labels += 1;
                    continue;
                }
                Member::Unknown => {
                    manifest.skipped.unknown_members += 1;
                    continue;
                }
            };
            if !self.kept.contains(&identity) {
                manifest.skipped.other_identities += 1;
                manifest.present.insert(identity);
                continue;
            }
            manifest.present.insert(identity.clone());
            manifest.converted.insert(identity);
            if !seen.insert(key.clone()) {
                manifest.skipped.duplicates += 1;
                continue;
            }
            let m4a = safe_entry_path(out, Path::new(&format!("{key}.m4a")))?;
            if let Some(dir) = m4a.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            {
                let mut w = File::create(&m4a)
                    .with_context(|| format!("cannot write {}", m4a.display()))?;
                std::io::copy(&mut entry, &mut w)
                    .and_then(|_| w.flush())
                    .with_context(|| format!("cannot unpack {}", name.display()))?;
            }
            let wav = m4a.with_extension("wav");
            match decode_audio_mono(&m4a, self.p.sample_rate) {
                Ok(samples) if !samples.is_empty() => {
                    write_pcm16(&wav, &samples, self.p.sample_rate)
                        .with_context(|| format!("cannot write {}", wav.display()))?;
                    manifest.kept.push(key);
                }
                Ok(_) => manifest.failed.push(FailedUtterance {
                    key,
                    reason: "the m4a holds no audio samples".to_string(),
                }),
                // The reason names the member, not the scratch file.
                Err(e) => manifest.failed.push(FailedUtterance {
                    key,
                    reason: format!("cannot decode the m4a: {e}")
                        .replace(&m4a.display().to_string(), &name.display().to_string()),
                }),
            }
            std::fs::remove_file(&m4a)
                .with_context(|| format!("cannot remove {}", m4a.display()))?;
        }
        let s = &manifest.skipped;
        let odd: Vec<String> = [
            (s.unknown_members, "members of another layout"),
            (s.not_files, "entries that are not files"),
            (s.duplicates, "duplicate keys"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !odd.is_empty() {
            eprintln!("voxceleb_subset: shard {shard}: skipped {}", odd.join(", "));
        }
        Ok(manifest)
    }
}

/// The manifest of a finished memo folder, or `None` when the folder is
/// missing or unfinished.
fn read_manifest(dir: &Path) -> Option<Manifest> {
    serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_voxceleb_keys_of_plain_path_parts_are_members() {
        let audio = |id: &str, key: &str| Member::Audio {
            identity: id.to_string(),
            key: key.to_string(),
        };
        assert_eq!(
            member(Path::new("id02139/yCPbcLeT5SI/00147.m4a")),
            audio("id02139", "id02139/yCPbcLeT5SI/00147")
        );
        assert_eq!(
            member(Path::new("./id00018/a-b_c/00001.m4a")),
            audio("id00018", "id00018/a-b_c/00001")
        );
        assert_eq!(
            member(Path::new("id02139/yCPbcLeT5SI/00147.cls")),
            Member::Label
        );
        for bad in [
            "../id00018/x/00001.m4a",
            "/id00018/x/00001.m4a",
            "id00018/../00001.m4a",
            "id00018/x/00001.mp3",
            "id00018/x/00001",
            "id00018/00001.m4a",
            "a/id00018/x/00001.m4a",
            "idx/x/00001.m4a",
            "id00018/x/.m4a",
            "__key__/x/1.m4a",
        ] {
            assert_eq!(member(Path::new(bad)), Member::Unknown, "{bad}");
        }
        // The key ends at the first dot, as WebDataset reads it.
        assert_eq!(
            member(Path::new("id00018/x/00001.wav.m4a")),
            Member::Unknown
        );
    }
}
