//! Truncated files that FFmpeg still opens (a faststart MP4, a Matroska file,
//! an MPEG-TS file, a WAV file cut short) fail element extraction or audio
//! decoding with a reason instead of being padded,
//! while intact files of the same kinds, including clips shorter than the
//! window, still pass. The same holds for the audio-only decoding that seedvc
//! and the stand-in converter use. The `ffmpeg` CLI makes the files.

mod media_common;

use std::path::{Path, PathBuf};

use media_common::{ffmpeg, require_ffmpeg};
use pipeline_media::media::decode::{decode_audio_mono, probe};
use pipeline_media::media::element::{extract, ElementSpec};
use pipeline_media::media::mel::MelSpectrogram;
use pipeline_media::media::MediaError;

/// The containers a truncated copy is made of: file name and muxer options.
const KINDS: &[(&str, &[&str])] = &[
    ("faststart.mp4", &["-movflags", "+faststart"]),
    ("plain.mkv", &[]),
    ("plain.ts", &[]),
];

/// Of those, the ones whose headers still promise the whole length once cut
/// (an MPEG-TS file declares no duration: FFmpeg estimates it from the last
/// timestamps present).
const DECLARES_ITS_LENGTH: &[&str] = &["faststart.mp4", "plain.mkv"];

/// Intact files that must pass: the kinds above plus others whose declared
/// durations differ from their content by a frame or a few audio packets.
const INTACT_ONLY: &[(&str, &[&str])] = &[
    ("plain.mp4", &[]),
    ("aac_longer.mp4", &["-af", "apad=pad_dur=0.3"]),
];

fn make(dir: &Path, name: &str, seconds: f64, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{seconds}s_{name}"));
    let video = format!("testsrc2=size=80x64:rate=25:duration={seconds}");
    let audio = format!("sine=f=440:sample_rate=44100:duration={seconds}");
    let mut args = vec![
        "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio, "-c:v", "libx264", "-pix_fmt",
        "yuv420p", "-c:a", "aac",
    ];
    args.extend_from_slice(extra);
    args.push(out.to_str().unwrap());
    ffmpeg(&args);
    out
}

/// A copy of `path` holding only its first `fraction` of bytes.
fn cut(path: &Path, fraction: f64) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.truncate((bytes.len() as f64 * fraction) as usize);
    let out = path.with_file_name(format!(
        "cut_{}",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn spec() -> ElementSpec {
    ElementSpec {
        clip_seconds: 3.2,
        frame_size: 32,
        min_seconds: 1.0,
        min_audio_coverage: 0.9,
    }
}

#[test]
fn an_audio_track_far_shorter_than_its_video_fails_with_its_coverage() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short_audio.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=80x64:rate=25:duration=3.7",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:sample_rate=44100:duration=0.3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        short.to_str().unwrap(),
    ]);
    let mel = MelSpectrogram::new();
    let err = extract(&short, &spec(), &mel, 0.0).expect_err("0.3 s of audio in a 3.7 s video");
    let text = err.to_string();
    assert!(text.contains("audio covers 0.3"), "{text}");
    assert!(text.contains("of a 3.20 s window"), "{text}");
    assert!(text.contains("short_audio.mp4"), "{text}");
    // Asked for less, the same file passes (its mel then padded).
    let lenient = ElementSpec {
        min_audio_coverage: 0.05,
        ..spec()
    };
    extract(&short, &lenient, &mel, 0.0).expect("coverage 0.05 accepts 0.3 of 3.2 s");
    // A full track and a clip shorter than the window both pass.
    for seconds in [3.7, 1.5] {
        let ok = make(dir.path(), "plain.mp4", seconds, &[]);
        extract(&ok, &spec(), &mel, 0.5).unwrap_or_else(|e| panic!("{seconds} s: {e}"));
    }
}

#[test]
fn a_truncated_file_that_still_opens_fails_with_a_reason() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mel = MelSpectrogram::new();
    for (name, extra) in KINDS {
        let whole = make(dir.path(), name, 5.0, extra);
        let cut = cut(&whole, 0.6);
        // It still opens; most headers still promise the whole length.
        let declared = probe(&cut).unwrap().video.unwrap().duration_sec;
        if DECLARES_ITS_LENGTH.contains(name) {
            assert!(declared > 4.9, "{name}: declares {declared} s");
        }
        // A window inside the part that is left fails as well as one past it.
        for u in [0.0, 0.99] {
            match extract(&cut, &spec(), &mel, u) {
                Err(e @ MediaError::Truncated { .. }) => {
                    let msg = e.to_string();
                    println!("{name} (u = {u}): {msg}");
                    assert!(msg.contains("truncated"), "{msg}");
                    assert!(msg.contains(cut.to_str().unwrap()), "{msg}");
                }
                other => panic!("{name} (u = {u}): expected Truncated, got {other:?}"),
            }
        }
        // The same file whole is fine.
        extract(&whole, &spec(), &mel, 0.99).unwrap();
    }
}

#[test]
fn intact_files_pass_including_clips_shorter_than_the_window() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mel = MelSpectrogram::new();
    for (name, extra) in KINDS.iter().chain(INTACT_ONLY) {
        for seconds in [5.0, 1.5] {
            let path = make(dir.path(), name, seconds, extra);
            let el = extract(&path, &spec(), &mel, 0.5)
                .unwrap_or_else(|e| panic!("{name} ({seconds} s): {e}"));
            if seconds < 3.2 {
                assert_eq!(el.window.start_frame, 0, "{name}");
            }
        }
    }
}

/// The audio-only decoding (seedvc's sources and references, the stand-in
/// converter) refuses a cut file too, a WAV among them, and takes the intact
/// ones.
#[test]
fn audio_only_decoding_refuses_a_truncated_file() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("ref.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=f=300:sample_rate=16000:duration=5",
        wav.to_str().unwrap(),
    ]);
    let mut files: Vec<PathBuf> = KINDS
        .iter()
        .chain(INTACT_ONLY)
        .map(|(name, extra)| make(dir.path(), name, 5.0, extra))
        .collect();
    files.push(wav);
    for whole in &files {
        let audio =
            decode_audio_mono(whole, 16_000).unwrap_or_else(|e| panic!("{}: {e}", whole.display()));
        assert!(audio.len() > 16_000 * 49 / 10, "{}", whole.display());
    }
    let cuts = KINDS
        .iter()
        .map(|(name, _)| dir.path().join(format!("5s_{name}")))
        .chain([dir.path().join("ref.wav")]);
    for whole in cuts {
        let cut = cut(&whole, 0.6);
        match decode_audio_mono(&cut, 16_000) {
            Err(e @ MediaError::Truncated { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(cut.to_str().unwrap()), "{msg}");
            }
            other => panic!(
                "{}: expected Truncated, got {:?}",
                cut.display(),
                other.map(|a| a.len())
            ),
        }
    }
}
