//! Speech-like audio for the synthetic corpus: an utterance is a sequence of
//! syllables (timing, vowel, accent); a voice (fundamental frequency, formant
//! scale, breathiness) turns it into a harmonic source shaped by three formant
//! resonators and by the syllable envelope. The same envelope drives the mouth
//! in the video, which is the causal link the detector must learn.

use std::f64::consts::TAU;

use crate::rng::Rng;

/// Vowel formants (F1, F2, F3) in Hz for an adult male vocal tract.
const VOWELS: [(f64, f64, f64); 5] = [
    (730.0, 1090.0, 2440.0), // a
    (530.0, 1840.0, 2480.0), // e
    (270.0, 2290.0, 3010.0), // i
    (570.0, 840.0, 2410.0),  // o
    (300.0, 870.0, 2240.0),  // u
];

/// A speaker's voice.
#[derive(Clone, Debug)]
pub struct Voice {
    /// Mean fundamental frequency (Hz).
    pub f0: f64,
    /// Formant frequencies relative to the table (shorter tract: higher).
    pub formant_scale: f64,
    /// Syllables per second.
    pub rate: f64,
    /// Aspiration noise relative to the voiced source.
    pub breathiness: f64,
}

impl Voice {
    /// A random voice; `female` raises pitch and formants.
    pub fn random(rng: &mut Rng, female: bool) -> Voice {
        Voice {
            f0: if female {
                rng.range(170.0, 250.0)
            } else {
                rng.range(90.0, 145.0)
            },
            formant_scale: if female {
                rng.range(1.1, 1.22)
            } else {
                rng.range(0.92, 1.04)
            },
            rate: rng.range(3.0, 5.5),
            breathiness: rng.range(0.02, 0.08),
        }
    }
}

/// One syllable of an utterance.
#[derive(Clone, Debug)]
pub struct Syllable {
    pub start: f64,
    pub dur: f64,
    pub vowel: usize,
    pub amp: f64,
    /// Relative pitch accent.
    pub accent: f64,
}

/// A syllable sequence filling `seconds`.
#[derive(Clone, Debug)]
pub struct Utterance {
    pub syllables: Vec<Syllable>,
    pub seconds: f64,
}

impl Utterance {
    /// A random sequence at the voice's speaking rate, with pauses.
    pub fn random(rng: &mut Rng, voice: &Voice, seconds: f64) -> Utterance {
        let mut syllables = Vec::new();
        let mut t = rng.range(0.05, 0.3);
        let mean = 1.0 / voice.rate;
        while t < seconds - 0.1 {
            let dur = (mean * rng.range(0.55, 0.95)).min(seconds - t);
            syllables.push(Syllable {
                start: t,
                dur,
                vowel: rng.below(VOWELS.len()),
                amp: rng.range(0.55, 1.0),
                accent: rng.range(-0.08, 0.12),
            });
            t += dur + mean * rng.range(0.1, 0.45);
            if rng.uniform() < 0.12 {
                t += rng.range(0.2, 0.5);
            }
        }
        Utterance { syllables, seconds }
    }

    /// The syllable envelope at time `t` (0 closed/silent .. 1 fully open/loud).
    pub fn envelope(&self, t: f64) -> f64 {
        self.syllables
            .iter()
            .find(|s| t >= s.start && t < s.start + s.dur)
            .map_or(0.0, |s| {
                let x = (t - s.start) / s.dur;
                s.amp * (std::f64::consts::PI * x).sin().powf(0.7)
            })
    }

    fn syllable_at(&self, t: f64) -> Option<&Syllable> {
        self.syllables
            .iter()
            .find(|s| t >= s.start - 0.03 && t < s.start + s.dur + 0.03)
    }
}

/// Manipulations that mark synthesised (fake) speech.
#[derive(Clone, Copy, Debug, Default)]
pub struct Artifacts {
    /// Pitch without micro-variation (a vocoder's flat intonation).
    pub flat_pitch: bool,
    /// Amplitude ripple at a frame rate (Hz; 0 for none).
    pub frame_ripple_hz: f64,
    /// A one-pole low-pass cutoff (Hz; 0 for none): band-limited vocoder.
    pub lowpass_hz: f64,
}

/// A two-pole resonator (formant).
struct Resonator {
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn step(&mut self, x: f64, freq: f64, bw: f64, sr: f64) -> f64 {
        let r = (-std::f64::consts::PI * bw / sr).exp();
        let c = 2.0 * r * (2.0 * std::f64::consts::PI * freq / sr).cos();
        let gain = 1.0 - r;
        let y = gain * x + c * self.y1 - r * r * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Renders `utt` in `voice` at `sr` Hz, peak-normalised to 0.5.
pub fn render(utt: &Utterance, voice: &Voice, sr: u32, art: Artifacts, rng: &mut Rng) -> Vec<f32> {
    let sr_f = f64::from(sr);
    let n = (utt.seconds * sr_f) as usize;
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64;
    let mut res = [
        Resonator { y1: 0.0, y2: 0.0 },
        Resonator { y1: 0.0, y2: 0.0 },
        Resonator { y1: 0.0, y2: 0.0 },
    ];
    let mut lp = 0.0f64;
    let lp_a = if art.lowpass_hz > 0.0 {
        (-2.0 * std::f64::consts::PI * art.lowpass_hz / sr_f).exp()
    } else {
        0.0
    };
    let mut formants = VOWELS[0];
    let mut jitter = 0.0f64;
    let vib_phase = rng.range(0.0, TAU);
    for i in 0..n {
        let t = i as f64 / sr_f;
        let env = utt.envelope(t);
        if let Some(s) = utt.syllable_at(t) {
            // Glide the formants towards the current vowel (coarticulation).
            let target = VOWELS[s.vowel];
            let k = 0.002;
            formants.0 += (target.0 - formants.0) * k;
            formants.1 += (target.1 - formants.1) * k;
            formants.2 += (target.2 - formants.2) * k;
        }
        let accent = utt.syllable_at(t).map_or(0.0, |s| s.accent);
        if !art.flat_pitch && i % 64 == 0 {
            jitter = 0.9 * jitter + 0.1 * rng.normal() * 0.03;
        }
        let drift = if art.flat_pitch {
            0.0
        } else {
            0.05 * (2.0 * std::f64::consts::PI * 0.7 * t + vib_phase).sin() + jitter + accent
        };
        let declination = 1.0 - 0.06 * t / utt.seconds.max(0.1);
        let f0 = voice.f0 * declination * (1.0 + drift);
        phase = (phase + f0 / sr_f).fract();
        let harmonics = ((0.45 * sr_f / f0) as usize).clamp(1, 40);
        let mut src = 0.0;
        for h in 1..=harmonics {
            src += (2.0 * std::f64::consts::PI * h as f64 * phase).sin() / h as f64;
        }
        src += voice.breathiness * 4.0 * rng.normal();
        let fs = voice.formant_scale;
        let mut y = 0.0;
        for (j, (f, bw)) in [(formants.0, 80.0), (formants.1, 100.0), (formants.2, 140.0)]
            .into_iter()
            .enumerate()
        {
            y += res[j].step(src, f * fs, bw, sr_f) * [1.0, 0.7, 0.35][j];
        }
        let mut v = y * env;
        if art.frame_ripple_hz > 0.0 {
            v *= 1.0 + 0.25 * (2.0 * std::f64::consts::PI * art.frame_ripple_hz * t).sin();
        }
        if lp_a > 0.0 {
            lp = (1.0 - lp_a) * v + lp_a * lp;
            v = lp;
        }
        v += 0.002 * rng.normal();
        out.push(v);
    }
    let peak = out.iter().fold(1e-9f64, |m, &x| m.max(x.abs()));
    out.into_iter().map(|x| (0.5 * x / peak) as f32).collect()
}
