//! The `seedvc` stage: voice-cloned hard fakes from RVRA. Per RVRA video it
//! plans two conversions: "hardest" (`RealVideo-FakeAudio-SelfVoiceClone`,
//! the clip's own audio as reference) and "harder"
//! (`RealVideo-FakeAudio-VoiceClone`, the same speaker's VoxCeleb2 utterance
//! most similar by speaker embedding, excluding candidates byte-identical to
//! the source audio). Each conversion runs the converter as a subprocess from
//! the command template of the profile (Seed-VC v1/v2, a site's own wrapper,
//! or the built-in stand-in), finds its output by Seed-VC's naming, checks it
//! (sample rate, duration against the source, not silent; see
//! [`super::seedvc_checks`]) and muxes the new voice onto the original video.
//! A failed conversion, or one whose output fails a check, is recorded as
//! failed and never written as a fake.
//!
//! Items are conversions; a finished one is memoized in the items folder
//! under its fingerprint (source and reference content, command, cwd, env).
//! Failures are not memoized: a converter may fail for passing reasons (a
//! busy GPU), so a rerun tries again.
//!
//! The command: `"seed_vc": "v1"` or `"v2"` runs Seed-VC's shipped
//! inference script with the paper's flags (the argv is in
//! [`pipeline_core::stages::seedvc_params`]), from `cwd`, the Seed-VC
//! checkout. A site runs it in its own environment by replacing `python`
//! with a `launcher`, e.g. `["conda", "run", "--no-capture-output", "-n",
//! "seedvc", "python"]` (`--no-capture-output` so Seed-VC's errors reach the
//! item's log as they happen), or gives the whole argv as `command`.
//! Template placeholders: `{pipeline}` (this program, `pipeline-media`, which
//! answers `vc-standin` as `pipeline` does; `{pipeline_media}` means the
//! same), `{source}`, `{target}`, `{output}`. The template is expanded into
//! an argv and never goes through a shell.
//!
//! Models: Seed-VC downloads its checkpoints on first run into
//! `checkpoints/` of its checkout and the Hugging Face cache. The
//! environment is inherited, so `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`
//! and `HF_TOKEN` reach the converter; with `HF_HUB_OFFLINE` set, the stage
//! first checks that the models of `required_models` are on disk and fails
//! with one message naming the missing ones and how to fetch them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::corpus::{scan, Category, Video};
use super::items::{file_blake3, owns, summarize, ItemLog, Outcome};
use super::seedvc_checks::{check_offline_models, check_output, converter_dir, hub_offline_reason};
use super::vc_standin::seedvc_stem;
use super::{Stage, StageContext};
use crate::media::decode::{decode_audio_mono, probe};
use crate::media::embed::{cosine, speaker_embedding};
use crate::media::mel::{MelSpectrogram, SAMPLE_RATE};
use crate::media::mux::mux_audio;
use crate::media::wav::write_pcm16;
use crate::util::write_atomic;

/// 2: a source or reference cut short (but still readable) fails its item
/// instead of being converted or embedded from the part that is left.
/// 3: a cut WAV or MPEG-TS file is told too.
/// 4: the converted voice is muxed at the source video's audio rate.
/// 5: the stand-in converter's output changed (`CONVERSION_VERSION` 5), and
///    a stage whose output bytes change must not look up to date.
const VERSION: u32 = super::versions::SEEDVC;

/// Keys the memo of one conversion. The checks of a source or reference run
/// before the memo is looked up, every time the stage runs, so making them
/// stricter (`VERSION`) re-checks the inputs without redoing the conversions
/// of sound ones; this changes only when a conversion's bytes would.
/// 3: muxed at the source video's audio rate, not the converter's.
/// 4: the stand-in converter's gain glides between frames.
/// 5: the stand-in converter is a harmonic-plus-noise model (partials where
///    the source has them, noise elsewhere).
const CONVERSION_VERSION: u32 = 5;

/// The built-in `seedvc` kind.
pub struct SeedVc;

type Params = super::media_params::SeedVcParams;

/// One planned conversion.
struct Job<'a> {
    video: &'a Video,
    category: Category,
    key: String,
}

impl Stage for SeedVc {
    fn kind(&self) -> &'static str {
        "seedvc"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        Params::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = Params::from_json(ctx.params)
            .with_context(|| format!("stage {}: bad seedvc parameters", ctx.stage))?;
        let dir = converter_dir(&p, ctx.workspace)
            .and_then(|dir| check_offline_models(&p, &dir).map(|()| dir))
            .with_context(|| format!("stage {}", ctx.stage))?;
        let videos: Vec<Video> = scan(ctx.input("fakeavceleb")?)?
            .into_iter()
            .filter(|v| v.category == Category::Rvra)
            .collect();
        let vox2 = ctx.input("vox2")?;
        let mut jobs: Vec<Job> = videos
            .iter()
            .flat_map(|v| {
                [Category::RvfaSvc, Category::RvfaVc].map(|category| Job {
                    video: v,
                    category,
                    key: v.key_as(category),
                })
            })
            .collect();
        jobs.sort_by(|a, b| a.key.cmp(&b.key));
        std::fs::create_dir_all(ctx.items_dir)
            .with_context(|| format!("cannot create {}", ctx.items_dir.display()))?;
        let plan = Mutex::new(Vec::new());
        let runner = Runner {
            p: &p,
            argv: p.argv(),
            dir,
            vox2,
            work: ctx.step_dir.join("work"),
            items_dir: ctx.items_dir,
            mel: MelSpectrogram::new(),
            embeddings: Mutex::new(HashMap::new()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads.max(1))
            .build()
            .context("cannot start the worker threads")?;
        let mine: Vec<&Job> = jobs
            .iter()
            .enumerate()
            .filter(|(i, _)| owns(ctx.shard, *i))
            .map(|(_, j)| j)
            .collect();
        let log = ItemLog::open(ctx.step_dir, ctx.stage, mine.len())?;
        let results: Vec<Result<(String, Result<PathBuf, String>)>> = pool.install(|| {
            mine.par_iter()
                .map(|job| {
                    let r = runner.convert(job, &plan);
                    let o = match &r {
                        Ok(_) => Outcome::Ok,
                        Err(e) => Outcome::Failed(e.clone()),
                    };
                    log.record(&job.key, &o)?;
                    Ok((job.key.clone(), r))
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        let mut plan = plan.into_inner().unwrap_or_else(|e| e.into_inner());
        plan.sort();
        let plan_path = ctx.step_dir.join("plan.jsonl");
        std::fs::write(&plan_path, plan.concat())
            .with_context(|| format!("cannot write {}", plan_path.display()))?;
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
        summarize(ctx.stage, &outcomes, p.max_failed_fraction)?;
        if ctx.shard.is_some() {
            return Ok(());
        }
        let out = ctx.output("voiceclone")?;
        for (key, r) in results {
            if let Ok(memo) = r {
                let dest = out.join(&key);
                if let Some(dir) = dest.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                std::fs::copy(&memo, &dest).with_context(|| {
                    format!("cannot copy {} to {}", memo.display(), dest.display())
                })?;
            }
        }
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        Ok(())
    }
}

struct Runner<'a> {
    p: &'a Params,
    /// The converter's argv, placeholders still in.
    argv: Vec<String>,
    /// The converter's working directory.
    dir: PathBuf,
    vox2: &'a Path,
    work: PathBuf,
    items_dir: &'a Path,
    mel: MelSpectrogram,
    /// Candidate path -> (content BLAKE3, embedding), computed once.
    embeddings: Mutex<HashMap<PathBuf, (String, Vec<f32>)>>,
}

/// Writes the source audio the converter reads: mono at the video's own
/// audio rate, 16-bit WAV, named after the video (Seed-VC names its output
/// after it).
pub fn extract_source_wav(video: &Path, out_dir: &Path) -> Result<PathBuf> {
    write_source_wav(video, out_dir).map(|(path, _)| path)
}

/// As [`extract_source_wav`], with the source's duration in seconds.
fn write_source_wav(video: &Path, out_dir: &Path) -> Result<(PathBuf, f64)> {
    let rate = probe(video)?
        .audio
        .map(|a| a.sample_rate)
        .filter(|&r| r > 0)
        .with_context(|| format!("{}: has no audio stream", video.display()))?;
    let samples = decode_audio_mono(video, rate)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let path = out_dir.join(format!("{}.wav", seedvc_stem(video)));
    write_pcm16(&path, &samples, rate)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, samples.len() as f64 / f64::from(rate)))
}

impl Runner<'_> {
    /// Runs one conversion in its own scratch folder; any error is this
    /// conversion's failure, with its reason.
    fn convert(&self, job: &Job, plan: &Mutex<Vec<String>>) -> Result<PathBuf, String> {
        let work = self
            .work
            .join(&blake3::hash(job.key.as_bytes()).to_hex()[..16]);
        let _ = std::fs::remove_dir_all(&work);
        let r = self.try_convert(job, &work, plan);
        let _ = std::fs::remove_dir_all(&work);
        r.unwrap_or_else(|e| Err(format!("{e:#}")))
    }

    fn try_convert(
        &self,
        job: &Job,
        work: &Path,
        plan: &Mutex<Vec<String>>,
    ) -> Result<Result<PathBuf, String>> {
        let video = &job.video.path;
        let (source, source_seconds) = write_source_wav(video, &work.join("in"))?;
        let source_hash = file_blake3(&source)?;
        let (reference, similarity) = match job.category {
            Category::RvfaSvc => (source.clone(), 1.0),
            _ => match self.best_reference(&job.video.identity, &source, &source_hash)? {
                Some(r) => r,
                None => {
                    return Ok(Err(format!(
                        "no usable VoxCeleb2 utterance of {} under {}",
                        job.video.identity,
                        self.vox2.display()
                    )))
                }
            },
        };
        plan.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
            "{}\n",
            serde_json::json!({
                "item": job.key,
                "source": job.video.key,
                "reference": reference.strip_prefix(self.vox2).map_or_else(|_| "(self)".to_string(), |r| r.to_string_lossy().into_owned()),
                "similarity": similarity,
            })
        ));
        let fp = blake3::hash(
            serde_json::json!({
                "stage": "seedvc",
                "version": CONVERSION_VERSION,
                "key": job.key,
                "video": file_blake3(video)?,
                "source": source_hash,
                "reference": file_blake3(&reference)?,
                "command": self.argv,
                "cwd": self.p.cwd,
                "env": self.p.env,
                // A conversion that passed looser checks is not reused
                // under stricter ones.
                "checks": [
                    self.p.expect_sample_rate,
                    self.p.duration_tolerance_seconds,
                    self.p.min_rms_dbfs,
                ],
            })
            .to_string()
            .as_bytes(),
        )
        .to_hex()
        .to_string();
        let memo = self.items_dir.join(format!("{fp}.mp4"));
        if memo.is_file() {
            return Ok(Ok(memo));
        }
        let out_dir = work.join("out");
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display()))?;
        if let Err(e) =
            self.run_converter(&source, &reference, &out_dir, &work.join("converter.log"))
        {
            return Ok(Err(e));
        }
        let Some(wav) = find_output(&out_dir, &source, &reference)? else {
            return Ok(Err(format!(
                "the converter wrote no output: expected vc_v2_{src}_{r}_*.wav or vc_{src}_{r}_*.wav in its output folder",
                src = seedvc_stem(&source),
                r = seedvc_stem(&reference)
            )));
        };
        let converted_rate = match probe(&wav).ok().and_then(|p| p.audio) {
            Some(a) => a.sample_rate,
            None => {
                return Ok(Err(format!(
                    "the converter's output {} is not audio",
                    wav.display()
                )))
            }
        };
        // The new voice goes in at the original's audio rate: muxed at the
        // converter's own rate (22.05 kHz for Seed-VC), the sample rate alone
        // would tell every voice-cloned video from its source (the shortcut
        // audit's finding).
        let rate = probe(video)
            .ok()
            .and_then(|p| p.audio)
            .map_or(converted_rate, |a| a.sample_rate);
        let audio = match decode_audio_mono(&wav, rate) {
            Ok(a) => a,
            Err(e) => return Ok(Err(format!("cannot read the converter's output: {e}"))),
        };
        let name = wav
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if let Err(e) = check_output(self.p, &name, converted_rate, &audio, rate, source_seconds) {
            return Ok(Err(e));
        }
        let tmp = work.join("muxed.mp4");
        if let Err(e) = mux_audio(video, &audio, rate, &tmp) {
            return Ok(Err(format!("cannot mux the converted audio: {e}")));
        }
        let bytes =
            std::fs::read(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
        write_atomic(&memo, &bytes)?;
        Ok(Ok(memo))
    }

    /// The same speaker's most similar VoxCeleb2 utterance.
    fn best_reference(
        &self,
        identity: &str,
        source: &Path,
        source_hash: &str,
    ) -> Result<Option<(PathBuf, f64)>> {
        let dir = self.vox2.join(identity);
        let mut candidates = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for yt in entries.flatten() {
                if let Ok(segs) = std::fs::read_dir(yt.path()) {
                    for s in segs.flatten() {
                        let p = s.path();
                        if p.extension().is_some_and(|e| e == "wav" || e == "m4a") {
                            candidates.push(p);
                        }
                    }
                }
            }
        }
        candidates.sort();
        let src = decode_audio_mono(source, SAMPLE_RATE)?;
        let src_emb = speaker_embedding(&self.mel, &src);
        let mut best: Option<(PathBuf, f64)> = None;
        for c in candidates {
            let (hash, emb) = match self.embedding(&c) {
                Some(x) => x,
                None => continue,
            };
            if hash == source_hash {
                continue;
            }
            let s = cosine(&src_emb, &emb);
            if best.as_ref().is_none_or(|(_, b)| s > *b) {
                best = Some((c, s));
            }
        }
        Ok(best)
    }

    fn embedding(&self, path: &Path) -> Option<(String, Vec<f32>)> {
        if let Some(e) = self.embeddings.lock().ok()?.get(path) {
            return Some(e.clone());
        }
        let hash = file_blake3(path).ok()?;
        let audio = decode_audio_mono(path, SAMPLE_RATE).ok()?;
        let e = (hash, speaker_embedding(&self.mel, &audio));
        self.embeddings
            .lock()
            .ok()?
            .insert(path.to_path_buf(), e.clone());
        Some(e)
    }

    fn run_converter(
        &self,
        source: &Path,
        target: &Path,
        out: &Path,
        log: &Path,
    ) -> Result<(), String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot locate this program for {{pipeline}}: {e}"))?;
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{pipeline_media}", "{pipeline}")
                    .replace("{pipeline}", &exe.to_string_lossy())
                    .replace("{source}", &source.to_string_lossy())
                    .replace("{target}", &target.to_string_lossy())
                    .replace("{output}", &out.to_string_lossy())
            })
            .collect();
        let log_file = std::fs::File::create(log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&self.p.env)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        cmd.current_dir(&self.dir);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the converter `{}`: {e}", argv[0]))?;
        let deadline = Instant::now() + Duration::from_secs(self.p.timeout_seconds);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the converter ran past timeout_seconds {} and was stopped",
                        self.p.timeout_seconds
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("cannot wait for the converter: {e}")),
            }
        };
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(reason) = hub_offline_reason(&text) {
            return Err(reason);
        }
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        Err(format!(
            "the converter exited with {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

/// Seed-VC's output for `source` and `reference` in `dir`: v2 names
/// `vc_v2_<src>_<ref>_...wav`, v1 names `vc_<src>_<ref>_...wav`.
fn find_output(dir: &Path, source: &Path, reference: &Path) -> Result<Option<PathBuf>> {
    let (s, r) = (seedvc_stem(source), seedvc_stem(reference));
    let prefixes = [format!("vc_v2_{s}_{r}_"), format!("vc_{s}_{r}_")];
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".wav") && prefixes.iter().any(|pre| name.starts_with(pre)) {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found.into_iter().next())
}
