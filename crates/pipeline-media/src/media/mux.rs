//! Putting a new audio track onto a video: the video stream is copied
//! untouched, the audio is encoded to AAC, the shorter stream decides the
//! length, and the index sits at the front (`+faststart`). The seedvc stage
//! uses it to lay converted voices onto the original RVRA videos.

use std::path::Path;

use ffmpeg_next::format;
use ffmpeg_next::media::Type;
use ffmpeg_next::{codec, encoder, Packet, Rational};

use super::encode::{header_options, AacEncoder};
use super::MediaError;

/// Writes `output`: the video stream of `video` copied, plus `audio` (mono,
/// `rate` Hz) as AAC; both cut to the shorter of the two.
pub fn mux_audio(video: &Path, audio: &[f32], rate: u32, output: &Path) -> Result<(), MediaError> {
    super::init();
    let mut ictx = format::input(&video).map_err(|e| MediaError::open(video, e))?;
    let ist = ictx
        .streams()
        .best(Type::Video)
        .ok_or(MediaError::NoStream {
            path: video.to_path_buf(),
            kind: "video",
        })?;
    let vindex = ist.index();
    let itb = ist.time_base();
    let params = ist.parameters();
    let mut packets = Vec::new();
    let mut end = 0i64;
    let mut errors = 0;
    loop {
        let mut p = Packet::empty();
        match p.read(&mut ictx) {
            Ok(()) => {
                errors = 0;
                if p.stream() == vindex {
                    if let Some(pts) = p.pts() {
                        end = end.max(pts + p.duration().max(0));
                    }
                    packets.push(p);
                }
            }
            Err(ffmpeg_next::Error::Eof) => break,
            Err(_) => {
                errors += 1;
                if errors > 64 {
                    break;
                }
            }
        }
    }
    if packets.is_empty() {
        return Err(MediaError::decode(video, "no video packet could be read"));
    }
    let video_sec = end as f64 * f64::from(itb);
    let audio_sec = audio.len() as f64 / f64::from(rate);
    let keep_sec = video_sec.min(audio_sec);
    let audio = &audio[..((keep_sec * f64::from(rate)).round() as usize).min(audio.len())];
    write(output, params, itb, &packets, keep_sec, audio, rate)
        .map_err(|e| MediaError::write(output, e))
}

fn write(
    output: &Path,
    params: codec::Parameters,
    itb: Rational,
    packets: &[Packet],
    keep_sec: f64,
    audio: &[f32],
    rate: u32,
) -> Result<(), String> {
    let mut octx = format::output_as(&output, "mp4").map_err(|e| e.to_string())?;
    let mut ost = octx
        .add_stream(encoder::find(codec::Id::None))
        .map_err(|e| e.to_string())?;
    ost.set_parameters(params);
    // The input container's codec tag may not be valid in MP4; let the muxer choose.
    unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
    ost.set_time_base(itb);
    let oindex = ost.index();
    let mut aac = AacEncoder::add(&mut octx, rate)?;
    octx.write_header_with(header_options())
        .map_err(|e| e.to_string())?;
    let otb = octx.stream(oindex).expect("added").time_base();
    let first = packets.iter().filter_map(|p| p.pts()).min().unwrap_or(0);
    for p in packets {
        let mut p = p.clone();
        if let Some(pts) = p.pts() {
            if (pts - first) as f64 * f64::from(itb) >= keep_sec {
                continue;
            }
        }
        p.set_pts(p.pts().map(|t| t - first));
        p.set_dts(p.dts().map(|t| t - first));
        p.set_stream(oindex);
        p.set_position(-1);
        p.rescale_ts(itb, otb);
        p.write_interleaved(&mut octx).map_err(|e| e.to_string())?;
    }
    aac.encode_all(&mut octx, audio)?;
    octx.write_trailer().map_err(|e| e.to_string())
}
