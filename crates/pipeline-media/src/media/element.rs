//! One element (the model's view of a clip): the z-scored log-mel of the
//! window's audio and its 16 sampled RGB frames, from one video file.

use std::path::Path;

use super::decode::decode_clip;
use super::frames::{choose_window, sample_16_quartile, Window, N_SAMPLED};
use super::mel::{window_samples, MelSpectrogram, N_FRAMES, N_MELS, SAMPLE_RATE};
use super::MediaError;

/// How elements are cut.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementSpec {
    /// Window length in seconds (3.2 in the reference).
    pub clip_seconds: f64,
    /// Square frame size after resizing (224 in the reference).
    pub frame_size: u32,
    /// A video shorter than this (seconds) is rejected as unusable.
    pub min_seconds: f64,
    /// The least share of the window's video time its audio must cover; a
    /// clip whose audio track stops early is rejected, not padded.
    pub min_audio_coverage: f64,
}

/// The element of one clip.
#[derive(Clone, Debug)]
pub struct Element {
    /// `[N_MELS, N_FRAMES]` float32, row-major.
    pub mel: Vec<f32>,
    /// `[16, S, S, 3]` uint8 RGB, row-major.
    pub frames: Vec<u8>,
    pub window: Window,
    pub indices: [usize; N_SAMPLED],
    /// Each sampled frame's time, seconds from the window start (the audio
    /// window starts there too).
    pub frame_times: [f64; N_SAMPLED],
}

/// Cuts the element of `path` whose window start is picked by `u` in `[0, 1)`.
pub fn extract(
    path: &Path,
    spec: &ElementSpec,
    mel: &MelSpectrogram,
    u: f64,
) -> Result<Element, MediaError> {
    let mut window = None;
    let clip = decode_clip(
        path,
        SAMPLE_RATE,
        Some((spec.frame_size, spec.frame_size)),
        |video| {
            if video.fps <= 0.0 || video.frames == 0 {
                return Err(MediaError::decode(
                    path,
                    "the video stream has no frame rate or no frames",
                ));
            }
            let seconds = video.frames as f64 / video.fps;
            if seconds < spec.min_seconds {
                return Err(MediaError::decode(
                    path,
                    format!(
                        "the clip is {seconds:.2} s long, shorter than the minimum of {} s",
                        spec.min_seconds
                    ),
                ));
            }
            let w = choose_window(video.frames as usize, video.fps, spec.clip_seconds, u);
            let indices = sample_16_quartile(w.start_frame, w.len, video.frames as usize - 1);
            window = Some((w, indices, video.fps));
            Ok(indices.to_vec())
        },
    )?;
    let (window, indices, fps) = window.expect("set by the picker");
    let frame_times = indices.map(|i| (i as f64 - window.start_frame as f64) / fps);
    let s = spec.frame_size;
    let mut frames = Vec::with_capacity(N_SAMPLED * (s * s * 3) as usize);
    for img in &clip.frames.images {
        frames.extend_from_slice(&img.data);
    }
    let audio = clip.audio;
    let start_sample = (window.start_sec * f64::from(SAMPLE_RATE)).round() as usize;
    let clip_samples = (spec.clip_seconds * f64::from(SAMPLE_RATE)).round() as usize;
    // The window's video time (less than the window for a short clip)
    // against the audio that covers it.
    let video_seconds = (window.len as f64 / fps).min(spec.clip_seconds);
    let audio_seconds = (audio.len().saturating_sub(start_sample) as f64 / f64::from(SAMPLE_RATE))
        .min(video_seconds);
    if audio_seconds < spec.min_audio_coverage * video_seconds {
        return Err(MediaError::decode(
            path,
            format!(
                "audio covers {audio_seconds:.2} s of a {video_seconds:.2} s window \
                 (the audio track is {:.2} s long; elements' min_audio_coverage is {})",
                audio.len() as f64 / f64::from(SAMPLE_RATE),
                spec.min_audio_coverage
            ),
        ));
    }
    let wav = window_samples(&audio, start_sample, clip_samples);
    let mel = mel.log_mel_element(&wav);
    debug_assert_eq!(mel.len(), N_MELS * N_FRAMES);
    Ok(Element {
        mel,
        frames,
        window,
        indices,
        frame_times,
    })
}
