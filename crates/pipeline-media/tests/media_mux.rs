//! Muxing a new audio track onto a video: the video stream is copied, the
//! audio becomes AAC, and the shorter stream decides the length.

mod media_common;

use media_common::{ffmpeg, require_ffmpeg};
use pipeline_media::media::decode::{decode_audio_mono, decode_frames, probe};
use pipeline_media::media::mux::mux_audio;

fn tone(seconds: f64, rate: u32) -> Vec<f32> {
    (0..(seconds * f64::from(rate)) as usize)
        .map(|i| {
            (0.4 * (2.0 * std::f64::consts::PI * 330.0 * i as f64 / f64::from(rate)).sin()) as f32
        })
        .collect()
}

#[test]
fn the_shorter_stream_wins_and_the_pictures_are_untouched() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:sample_rate=48000:duration=3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "flac",
        src.to_str().unwrap(),
    ]);
    // Audio shorter than the video: the video is cut to it.
    let short = dir.path().join("short.mp4");
    mux_audio(&src, &tone(1.5, 22_050), 22_050, &short).unwrap();
    let p = probe(&short).unwrap();
    let v = p.video.unwrap();
    assert!((36..=40).contains(&v.frames), "{} frames kept", v.frames);
    let a = p.audio.unwrap();
    assert_eq!(a.sample_rate, 22_050);
    let n = decode_audio_mono(&short, 16_000).unwrap().len();
    assert!((22_000..=26_000).contains(&n), "{n} samples");
    // Audio longer than the video: the audio is cut to it.
    let long = dir.path().join("long.mp4");
    mux_audio(&src, &tone(5.0, 16_000), 16_000, &long).unwrap();
    let n = decode_audio_mono(&long, 16_000).unwrap().len();
    assert!((47_000..=50_000).contains(&n), "{n} samples");
    assert_eq!(probe(&long).unwrap().video.unwrap().frames, 75);
    // The video stream is copied, not re-encoded: the same pictures.
    let idx = [0usize, 17, 74];
    assert_eq!(
        decode_frames(&long, &idx, None).unwrap().images,
        decode_frames(&src, &idx, None).unwrap().images
    );
    // MP4 with the index at the front (+faststart): "moov" before "mdat".
    let bytes = std::fs::read(&long).unwrap();
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(find(b"moov") < find(b"mdat"));
}

#[test]
fn a_video_without_a_video_stream_is_an_error_not_a_panic() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("audio.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:duration=1",
        "-c:a",
        "aac",
        src.to_str().unwrap(),
    ]);
    let err = mux_audio(&src, &tone(1.0, 16_000), 16_000, &dir.path().join("x.mp4")).unwrap_err();
    assert!(err.to_string().contains("no video stream"), "{err}");
}
