//! The `synth` stage: the embedded default's data. A FakeAVCeleb-shaped corpus
//! (the four category trees with their race/gender/id folders and a
//! `meta_data.csv`) of real MP4 files (H.264 or MPEG-4 video, AAC audio,
//! encoded through FFmpeg), plus a VoxCeleb2-shaped tree of reference
//! utterances (`<id>/<youtube_id>/<segment>.wav`), all deterministic from the
//! seed.
//!
//! The causal structure the paper depends on: every identity has a face and
//! a voice; the mouth opening follows the syllable envelope of the speech
//! (the picture leads the sound by `lead_seconds`), with head motion, blinks
//! and noise. RVRA: audio and mouth from one syllable sequence. RVFA: audio
//! from another sequence (out of sync) with vocoder artifacts. FVRA: real
//! audio, mouth driven by another sequence inside a blended patch. FVFA: both.

use std::f64::consts::TAU;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::corpus::{Category, GENDERS, RACES};
use super::synth_face::{self, Blend, Face};
use super::synth_voice::{self, Artifacts, Utterance, Voice};
use super::{Stage, StageContext};
use crate::media::encode::{write_mp4, VideoSpec};
use crate::media::wav::write_pcm16;
use crate::rng::Rng;

/// 2: each video is encoded on a thread of its own (output no longer depends
/// on the number of worker threads).
/// 3: every clip is recorded at a level of its own (the shortcut audit found
/// that loudness and peak level alone told fake audio from real).
const VERSION: u32 = super::versions::SYNTH;

/// The range of recording levels (RMS, dBFS) a clip's audio is set to.
const LEVEL_DBFS: (f64, f64) = (-28.0, -18.0);

/// Sets `audio` to a recording level drawn for `key` (RMS in dBFS, from
/// [`LEVEL_DBFS`]), the same distribution for every category: peak
/// normalisation left the fakes' low-passed speech quieter and real clips'
/// peaks all at one value, each a shortcut on its own. Peaks stay below
/// full scale.
fn record_level(audio: &mut [f32], seed: u64, key: &str) {
    let target =
        10f64.powf(Rng::for_item(seed, "level", key).range(LEVEL_DBFS.0, LEVEL_DBFS.1) / 20.0);
    let rms = (audio
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        / audio.len().max(1) as f64)
        .sqrt();
    let peak = audio.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    if rms <= 0.0 {
        return;
    }
    let gain = (target / rms).min(0.99 / peak.max(1e-12));
    audio
        .iter_mut()
        .for_each(|v| *v = (f64::from(*v) * gain) as f32);
}

/// The built-in `synth` kind.
pub struct Synth;

type Params = super::media_params::SynthParams;

/// One identity of the corpus.
struct Identity {
    id: String,
    race: &'static str,
    gender: &'static str,
    voice: Voice,
    face: Face,
}

fn identities(p: &Params) -> Vec<Identity> {
    (0..p.identities)
        .map(|i| {
            let id = format!("id{:05}", 100 + i);
            let gender = GENDERS[(i / RACES.len()) % GENDERS.len()];
            let mut rng = Rng::for_item(p.seed, "identity", &id);
            Identity {
                race: RACES[i % RACES.len()],
                gender,
                voice: Voice::random(&mut rng, gender == "women"),
                face: Face::random(&mut rng),
                id,
            }
        })
        .collect()
}

/// FakeAVCeleb's method name and category letter.
fn method(c: Category) -> (&'static str, &'static str) {
    match c {
        Category::Rvra => ("real", "A"),
        Category::Rvfa => ("rtvc", "B"),
        Category::Fvra => ("wav2lip", "C"),
        _ => ("faceswap-wav2lip", "D"),
    }
}

impl Stage for Synth {
    fn kind(&self) -> &'static str {
        "synth"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        Params::from_json(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<()> {
        let p = Params::from_json(ctx.params)
            .with_context(|| format!("stage {}: bad synth parameters", ctx.stage))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads.max(1))
            .build()
            .context("cannot start the worker threads")?;
        pool.install(|| generate(&p, ctx.output("fakeavceleb")?, ctx.output("vox2")?))
    }
}

/// Writes the corpus into `fakeavceleb` and the reference tree into `vox2`.
pub fn generate(p: &Params, fakeavceleb: &Path, vox2: &Path) -> Result<()> {
    let ids = identities(p);
    let cats = [
        Category::Rvra,
        Category::Rvfa,
        Category::Fvra,
        Category::Fvfa,
    ];
    let mut jobs = Vec::new();
    for who in &ids {
        for c in cats {
            for n in 0..p.videos_per_category {
                let (m, _) = method(c);
                let name = if c == Category::Rvra {
                    format!("{:05}.mp4", n + 1)
                } else {
                    format!("{:05}_{m}.mp4", n + 1)
                };
                jobs.push((who, c, name));
            }
        }
    }
    jobs.par_iter()
        .map(|(who, c, name)| {
            let dir = fakeavceleb
                .join(c.folder())
                .join(who.race)
                .join(who.gender)
                .join(&who.id);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let key = format!(
                "{}/{}/{}/{}/{name}",
                c.folder(),
                who.race,
                who.gender,
                who.id
            );
            let path = dir.join(name);
            // Each video is encoded on a fresh thread: when one worker thread
            // encoded several videos in turn, libx264 sometimes wrote a video
            // differently than after another history (seen with 1 thread vs
            // 2), so the corpus depended on the thread count. A thread per
            // video costs microseconds against an encode of a second or more.
            std::thread::scope(|s| {
                s.spawn(|| video(p, who, *c, &key, &path))
                    .join()
                    .unwrap_or_else(|_| bail!("encoding {key} panicked"))
            })
        })
        .collect::<Result<()>>()?;
    let mut csv = String::from("source,target1,target2,method,category,type,race,gender,path,\n");
    for (who, c, name) in &jobs {
        let (m, letter) = method(*c);
        csv.push_str(&format!(
            "{},-,-,{m},{letter},{},{},{},{name},FakeAVCeleb/{}/{}/{}/{}\n",
            who.id,
            c.folder(),
            who.race,
            who.gender,
            c.folder(),
            who.race,
            who.gender,
            who.id
        ));
    }
    std::fs::write(fakeavceleb.join("meta_data.csv"), csv)
        .with_context(|| format!("cannot write {}", fakeavceleb.display()))?;
    ids.par_iter()
        .map(|who| references(p, who, vox2))
        .collect::<Result<()>>()
}

/// The three syllable sequences a video may use, and its duration.
fn sequences(p: &Params, who: &Identity, rng: &mut Rng) -> (f64, [Utterance; 3]) {
    let seconds = rng.range(p.min_seconds, p.max_seconds.max(p.min_seconds));
    let a = Utterance::random(rng, &who.voice, seconds);
    let b = Utterance::random(rng, &who.voice, seconds);
    let c = Utterance::random(rng, &who.voice, seconds);
    (seconds, [a, b, c])
}

fn video(p: &Params, who: &Identity, c: Category, key: &str, path: &Path) -> Result<()> {
    let mut rng = Rng::for_item(p.seed, "video", key);
    let (seconds, [a, b, cc]) = sequences(p, who, &mut rng);
    let fake_audio = Artifacts {
        flat_pitch: true,
        frame_ripple_hz: rng.range(60.0, 110.0),
        lowpass_hz: rng.range(3000.0, 4500.0),
    };
    // A visible but modest tone shift of the swapped lower face: 8..22 levels
    // per channel, either way.
    let mut shift = [0.0; 3];
    for s in shift.iter_mut() {
        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        *s = sign * rng.range(8.0, 22.0);
    }
    let blend = Blend { shift };
    let (speech, art, mouth, blended) = match c {
        Category::Rvra => (&a, Artifacts::default(), &a, false),
        Category::Rvfa => (&b, fake_audio, &a, false),
        Category::Fvra => (&a, Artifacts::default(), &b, true),
        _ => (&b, fake_audio, &cc, true),
    };
    let mut audio = synth_voice::render(speech, &who.voice, p.sample_rate, art, &mut rng);
    record_level(&mut audio, p.seed, key);
    let frames = faces(p, who, mouth, seconds, blended.then_some(blend), &mut rng);
    let spec = VideoSpec {
        width: p.frame_size,
        height: p.frame_size,
        fps: p.fps,
    };
    write_mp4(path, &spec, &frames, &audio, p.sample_rate)?;
    Ok(())
}

fn faces(
    p: &Params,
    who: &Identity,
    mouth: &Utterance,
    seconds: f64,
    blend: Option<Blend>,
    rng: &mut Rng,
) -> Vec<Vec<u8>> {
    let n = (seconds * f64::from(p.fps)).round() as usize;
    let size = p.frame_size as usize;
    let amp = size as f64 / 48.0;
    let (ph1, ph2) = (rng.range(0.0, TAU), rng.range(0.0, TAU));
    let mut blink_until = 0usize;
    (0..n)
        .map(|f| {
            let t = f as f64 / f64::from(p.fps);
            // The picture leads the sound: the mouth now shows what is heard next.
            let open = mouth.envelope(t + p.lead_seconds);
            let head = (
                amp * (1.2 * (TAU * 0.3 * t + ph1).sin() + 0.4 * (TAU * 1.1 * t).sin()),
                amp * 0.8 * (TAU * 0.23 * t + ph2).sin(),
            );
            if f >= blink_until && rng.uniform() < 0.015 {
                blink_until = f + 3;
            }
            let flicker = rng.uniform();
            synth_face::render(
                &who.face,
                size,
                open,
                head,
                f < blink_until,
                blend.map(|b| (b, flicker)),
                rng,
            )
        })
        .collect()
}

/// The identity's VoxCeleb2-shaped reference utterances (real speech, new
/// sequences), as 16-bit WAV files.
fn references(p: &Params, who: &Identity, vox2: &Path) -> Result<()> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    for u in 0..p.vox2_utterances {
        let mut rng = Rng::for_item(p.seed, "vox2", &format!("{}/{u}", who.id));
        let yt: String = (0..11)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())] as char)
            .collect();
        let dir = vox2.join(&who.id).join(yt);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let seconds = rng.range(3.0, 6.0);
        let utt = Utterance::random(&mut rng, &who.voice, seconds);
        let mut audio = synth_voice::render(
            &utt,
            &who.voice,
            p.sample_rate,
            Artifacts::default(),
            &mut rng,
        );
        record_level(&mut audio, p.seed, &format!("vox2/{}/{u}", who.id));
        let path = dir.join(format!("{:05}.wav", u + 1));
        write_pcm16(&path, &audio, p.sample_rate)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
