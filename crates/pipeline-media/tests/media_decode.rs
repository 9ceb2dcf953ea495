//! Decoding, resampling and frame extraction against the `ffmpeg` CLI as an
//! oracle, on clips the CLI makes: several codecs and containers, stereo
//! 44.1 kHz and mono 48 kHz audio, odd frame sizes, a variable frame rate.

mod media_common;

use media_common::{ffmpeg, ffmpeg_stdout, require_ffmpeg};
use pipeline_media::media::decode::{decode_audio_mono, decode_frames, probe};

struct Clip {
    name: &'static str,
    args: &'static [&'static str],
}

/// Moving test pattern (so neighbouring frames differ) and a two-tone audio
/// track whose channels differ (so the down-mix matters).
const CLIPS: &[Clip] = &[
    Clip {
        name: "h264_aac_stereo44k.mp4",
        args: &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=176x144:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.5*sin(2*PI*440*t)|0.3*sin(2*PI*1250*t+1):s=44100:d=3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
        ],
    },
    Clip {
        name: "h264_444_odd_flac_mono48k.mkv",
        args: &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=176x98:rate=30:duration=3,scale=175:97",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.4*sin(2*PI*(300+200*t)*t):s=48000:d=3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv444p",
            "-c:a",
            "flac",
            "-ac",
            "1",
        ],
    },
    Clip {
        name: "mpeg4_mp3_stereo44k.avi",
        args: &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=24:duration=3",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.5*sin(2*PI*520*t)|0.5*sin(2*PI*780*t):s=44100:d=3",
            "-c:v",
            "mpeg4",
            "-q:v",
            "3",
            "-c:a",
            "libmp3lame",
            "-ac",
            "2",
        ],
    },
    Clip {
        name: "vp9_opus_mono48k.webm",
        args: &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=128x96:rate=25:duration=3",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.5*sin(2*PI*350*t)*(0.6+0.4*sin(2*PI*3*t)):s=48000:d=3",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-c:a",
            "libopus",
            "-ac",
            "1",
        ],
    },
    Clip {
        name: "vfr_h264_aac.mp4",
        args: &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=176x144:rate=30:duration=3",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=0.5*sin(2*PI*440*t)|0.5*sin(2*PI*660*t):s=44100:d=3",
            "-vf",
            "setpts=PTS+floor(N/7)*0.05/TB",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    },
];

fn make(dir: &std::path::Path, clip: &Clip) -> std::path::PathBuf {
    let out = dir.join(clip.name);
    let mut args: Vec<&str> = clip.args.to_vec();
    args.push("-shortest");
    args.push(out.to_str().unwrap());
    ffmpeg(&args);
    out
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let mb = b.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn audio_matches_the_ffmpeg_cli_resampled_to_16k_mono() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for clip in CLIPS {
        let path = make(dir.path(), clip);
        let ours = decode_audio_mono(&path, 16_000).unwrap();
        let raw = ffmpeg_stdout(&[
            "-i",
            path.to_str().unwrap(),
            "-ac",
            "1",
            "-ar",
            "16000",
            "-f",
            "f32le",
            "-",
        ]);
        let cli: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let r = correlation(&ours, &cli);
        println!(
            "{}: {} vs {} samples, correlation {r:.6}",
            clip.name,
            ours.len(),
            cli.len()
        );
        assert!(r > 0.999, "{}: correlation {r}", clip.name);
        let diff = ours.len().abs_diff(cli.len());
        assert!(
            diff <= 1600,
            "{}: length {} vs {}",
            clip.name,
            ours.len(),
            cli.len()
        );
    }
}

fn cli_frames(path: &std::path::Path, indices: &[usize], w: usize, h: usize) -> Vec<Vec<u8>> {
    let sel = indices
        .iter()
        .map(|i| format!("eq(n\\,{i})"))
        .collect::<Vec<_>>()
        .join("+");
    let raw = ffmpeg_stdout(&[
        "-i",
        path.to_str().unwrap(),
        "-vf",
        &format!("select='{sel}'"),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    raw.chunks_exact(w * h * 3).map(|c| c.to_vec()).collect()
}

fn mad(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn frames_match_the_ffmpeg_cli_at_the_same_indices() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for clip in CLIPS {
        let path = make(dir.path(), clip);
        let info = probe(&path).unwrap().video.unwrap();
        let indices = [2usize, 9, 10, 31, 47, 60];
        let ours = decode_frames(&path, &indices, None).unwrap();
        assert_eq!(ours.clamped, 0, "{}", clip.name);
        let (w, h) = (info.width as usize, info.height as usize);
        let cli = cli_frames(&path, &indices, w, h);
        assert_eq!(cli.len(), indices.len(), "{}: CLI frames", clip.name);
        for (k, (img, theirs)) in ours.images.iter().zip(&cli).enumerate() {
            assert_eq!((img.width as usize, img.height as usize), (w, h));
            let d = mad(&img.data, theirs);
            println!("{} frame {}: MAD {d:.3}", clip.name, indices[k]);
            assert!(d < 2.0, "{} frame {}: MAD {d}", clip.name, indices[k]);
        }
        // The comparison can fail: neighbouring frames of the pattern differ.
        assert!(mad(&ours.images[1].data, &cli[2]) > 2.0, "{}", clip.name);
    }
}

#[test]
fn probe_reads_geometry_rate_and_frame_count() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), &CLIPS[1]);
    let p = probe(&path).unwrap();
    let v = p.video.unwrap();
    assert_eq!((v.width, v.height), (175, 97));
    assert!((v.fps - 30.0).abs() < 1e-6, "fps {}", v.fps);
    assert!((88..=92).contains(&v.frames), "frames {}", v.frames);
    let a = p.audio.unwrap();
    assert_eq!((a.sample_rate, a.channels), (48_000, 1));
}

#[test]
fn indices_past_the_end_get_the_last_frame_and_resizing_is_exact_size() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), &CLIPS[0]);
    let got = decode_frames(&path, &[74, 500, 3], Some((64, 48))).unwrap();
    assert_eq!(got.decoded, 75);
    assert_eq!(got.clamped, 1);
    assert_eq!(got.images[0], got.images[1]);
    assert_ne!(got.images[0], got.images[2]);
    assert!(got
        .images
        .iter()
        .all(|i| i.width == 64 && i.height == 48 && i.data.len() == 64 * 48 * 3));
}

#[test]
fn one_pass_clip_decoding_equals_the_separate_decoders() {
    if !require_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for clip in CLIPS {
        let path = make(dir.path(), clip);
        let idx = vec![3usize, 3, 20, 44, 71];
        let one = pipeline_media::media::decode::decode_clip(&path, 16_000, Some((40, 30)), |v| {
            assert!(v.frames >= 72, "{}", clip.name);
            Ok(idx.clone())
        })
        .unwrap();
        assert_eq!(
            one.audio,
            decode_audio_mono(&path, 16_000).unwrap(),
            "{}",
            clip.name
        );
        assert_eq!(
            one.frames.images,
            decode_frames(&path, &idx, Some((40, 30))).unwrap().images,
            "{}",
            clip.name
        );
    }
}
