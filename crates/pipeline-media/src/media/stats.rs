//! Trivial statistics of a clip's audio, for the shortcut audit: how long it
//! stays silent at its start and at its end, how loud it is. A detector that
//! could decide real from fake on one of these alone would be learning the
//! dataset, not the forgery (real FakeAVCeleb's fakes begin with a short
//! silence that alone separates them).
//!
//! Silence is judged on 10 ms frames: a frame is silent when its RMS level is
//! more than `relative_db` below the clip's loudest frame, or below
//! `floor_dbfs` whatever the clip's level, so a quiet recording is not all
//! "silence" and a loud one does not count its breaths as speech.

/// Levels of digital silence are reported as this (dBFS).
pub const SILENT_DBFS: f64 = -120.0;

/// How silence is told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SilenceRule {
    pub relative_db: f64,
    pub floor_dbfs: f64,
}

impl Default for SilenceRule {
    fn default() -> Self {
        Self {
            relative_db: 35.0,
            floor_dbfs: -60.0,
        }
    }
}

/// The statistics of one clip's (mono) audio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioStats {
    pub duration_s: f64,
    pub leading_silence_s: f64,
    pub trailing_silence_s: f64,
    /// RMS level over the whole clip (dBFS; a full-scale square wave is 0).
    pub loudness_dbfs: f64,
    /// The largest absolute sample (dBFS).
    pub peak_dbfs: f64,
}

fn dbfs(x: f64) -> f64 {
    if x > 0.0 {
        (20.0 * x.log10()).max(SILENT_DBFS)
    } else {
        SILENT_DBFS
    }
}

fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The statistics of `samples` at `rate` Hz.
pub fn audio_stats(samples: &[f32], rate: u32, rule: SilenceRule) -> AudioStats {
    let rate_f = f64::from(rate.max(1));
    let duration_s = samples.len() as f64 / rate_f;
    let hop = ((rate_f / 100.0).round() as usize).max(1);
    let levels: Vec<f64> = samples.chunks(hop).map(|c| dbfs(rms(c))).collect();
    let loudest = levels.iter().copied().fold(SILENT_DBFS, f64::max);
    let threshold = (loudest - rule.relative_db).max(rule.floor_dbfs);
    let sounding = |l: &f64| *l > threshold;
    let (leading_silence_s, trailing_silence_s) = match levels.iter().position(sounding) {
        None => (duration_s, duration_s),
        Some(first) => {
            let last = levels.iter().rposition(sounding).expect("one frame sounds");
            let end_of_last = ((last + 1) * hop).min(samples.len());
            (
                (first * hop) as f64 / rate_f,
                (samples.len() - end_of_last) as f64 / rate_f,
            )
        }
    };
    let peak = samples
        .iter()
        .fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    AudioStats {
        duration_s,
        leading_silence_s,
        trailing_silence_s,
        loudness_dbfs: dbfs(rms(samples)),
        peak_dbfs: dbfs(peak),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        let n = (seconds * f64::from(RATE)) as usize;
        (0..n)
            .map(|i| amp * (std::f32::consts::TAU * 220.0 * i as f32 / RATE as f32).sin())
            .collect()
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * f64::from(RATE)) as usize]
    }

    #[test]
    fn a_clip_with_leading_silence_says_how_long() {
        let clip = [silence(0.3), tone(1.0, 0.5), silence(0.12)].concat();
        let s = audio_stats(&clip, RATE, SilenceRule::default());
        assert!((s.leading_silence_s - 0.3).abs() < 0.011, "{s:?}");
        assert!((s.trailing_silence_s - 0.12).abs() < 0.011, "{s:?}");
        assert!((s.duration_s - 1.42).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_quiet_clip_is_quiet_but_not_silent() {
        // A sine of amplitude a has an RMS of a / sqrt(2).
        let quiet = audio_stats(&tone(1.0, 0.01), RATE, SilenceRule::default());
        let expect = 20.0 * (0.01f64 / 2f64.sqrt()).log10();
        assert!((quiet.loudness_dbfs - expect).abs() < 0.05, "{quiet:?}");
        assert!((quiet.peak_dbfs - (-40.0)).abs() < 0.05, "{quiet:?}");
        assert_eq!(quiet.leading_silence_s, 0.0, "{quiet:?}");
        let loud = audio_stats(&tone(1.0, 0.5), RATE, SilenceRule::default());
        assert!((loud.loudness_dbfs - quiet.loudness_dbfs - 20.0 * 50f64.log10()).abs() < 0.05);
    }

    #[test]
    fn a_clip_below_the_floor_is_all_silence() {
        let s = audio_stats(&tone(0.5, 0.0005), RATE, SilenceRule::default());
        assert_eq!(s.leading_silence_s, s.duration_s);
        assert_eq!(
            audio_stats(&silence(0.5), RATE, SilenceRule::default()).loudness_dbfs,
            SILENT_DBFS
        );
    }
}
