//! Encoding RGB frames and mono audio into an MP4 file (H.264 through libx264
//! where FFmpeg has it, MPEG-4 part 2 otherwise; AAC audio), deterministically:
//! one encoder thread and FFmpeg's bit-exact flags, so the same input gives
//! the same bytes.

use std::path::Path;

use ffmpeg_next::codec::{self, encoder};
use ffmpeg_next::format::{self, Pixel, Sample};
use ffmpeg_next::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next::{frame, ChannelLayout, Dictionary, Packet, Rational};

use super::MediaError;

/// What to encode.
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// An AAC encoder feeding one stream of an output file.
pub(crate) struct AacEncoder {
    enc: encoder::Audio,
    stream: usize,
    rate: u32,
    frame_size: usize,
    next_pts: i64,
}

impl AacEncoder {
    /// Adds an AAC mono stream at `rate` Hz to `octx`.
    pub(crate) fn add(octx: &mut format::context::Output, rate: u32) -> Result<Self, String> {
        let codec = encoder::find(codec::Id::AAC).ok_or("FFmpeg has no AAC encoder")?;
        let global = octx
            .format()
            .flags()
            .contains(format::flag::Flags::GLOBAL_HEADER);
        let mut ost = octx.add_stream(codec).map_err(|e| e.to_string())?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| e.to_string())?;
        enc.set_rate(rate as i32);
        enc.set_channel_layout(ChannelLayout::MONO);
        enc.set_format(Sample::F32(format::sample::Type::Planar));
        enc.set_bit_rate(96_000);
        enc.set_time_base((1, rate as i32));
        if global {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = Dictionary::new();
        opts.set("flags", "+bitexact");
        let enc = enc
            .open_as_with(codec, opts)
            .map_err(|e| format!("cannot open the AAC encoder: {e}"))?;
        ost.set_parameters(&enc);
        ost.set_time_base((1, rate as i32));
        let frame_size = (enc.frame_size() as usize).max(1);
        Ok(AacEncoder {
            stream: ost.index(),
            enc,
            rate,
            frame_size,
            next_pts: 0,
        })
    }

    /// Encodes all of `samples` and flushes the encoder.
    pub(crate) fn encode_all(
        &mut self,
        octx: &mut format::context::Output,
        samples: &[f32],
    ) -> Result<(), String> {
        for chunk in samples.chunks(self.frame_size) {
            let mut f = frame::Audio::new(
                Sample::F32(format::sample::Type::Planar),
                chunk.len(),
                ChannelLayout::MONO,
            );
            f.set_rate(self.rate);
            f.plane_mut::<f32>(0)[..chunk.len()].copy_from_slice(chunk);
            f.set_pts(Some(self.next_pts));
            self.next_pts += chunk.len() as i64;
            self.enc.send_frame(&f).map_err(|e| e.to_string())?;
            self.write_ready(octx)?;
        }
        self.enc.send_eof().map_err(|e| e.to_string())?;
        self.write_ready(octx)
    }

    fn write_ready(&mut self, octx: &mut format::context::Output) -> Result<(), String> {
        let tb_out = octx.stream(self.stream).expect("added").time_base();
        let mut packet = Packet::empty();
        while self.enc.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.stream);
            packet.rescale_ts(Rational::new(1, self.rate as i32), tb_out);
            packet.write_interleaved(octx).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Options for writing the container: bit-exact (no version strings) and the
/// index at the front (`+faststart`) so players and readers start fast.
pub(crate) fn header_options() -> Dictionary<'static> {
    let mut d = Dictionary::new();
    d.set("fflags", "+bitexact");
    d.set("movflags", "+faststart");
    d
}

/// Writes an MP4 with `frames` (packed RGB24, `width*height*3` bytes each) at
/// `spec.fps` and a mono AAC track of `audio` at `rate` Hz.
pub fn write_mp4(
    path: &Path,
    spec: &VideoSpec,
    frames: &[Vec<u8>],
    audio: &[f32],
    rate: u32,
) -> Result<(), MediaError> {
    super::init();
    write_mp4_inner(path, spec, frames, audio, rate).map_err(|e| MediaError::write(path, e))
}

fn write_mp4_inner(
    path: &Path,
    spec: &VideoSpec,
    frames: &[Vec<u8>],
    audio: &[f32],
    rate: u32,
) -> Result<(), String> {
    let mut octx = format::output_as(&path, "mp4").map_err(|e| e.to_string())?;
    let global = octx
        .format()
        .flags()
        .contains(format::flag::Flags::GLOBAL_HEADER);
    let (codec, x264) = match encoder::find_by_name("libx264") {
        Some(c) => (c, true),
        None => (
            encoder::find(codec::Id::MPEG4).ok_or("FFmpeg has neither libx264 nor MPEG-4")?,
            false,
        ),
    };
    let mut ost = octx.add_stream(codec).map_err(|e| e.to_string())?;
    let vindex = ost.index();
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| e.to_string())?;
    enc.set_width(spec.width);
    enc.set_height(spec.height);
    enc.set_format(Pixel::YUV420P);
    let tb = Rational::new(1, spec.fps as i32);
    enc.set_time_base(tb);
    enc.set_frame_rate(Some(Rational::new(spec.fps as i32, 1)));
    enc.set_gop(spec.fps * 2);
    // No B-frames: no edit list, so readers see exactly the frames written
    // and the stream's average rate is the nominal one.
    enc.set_max_b_frames(0);
    if global {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut opts = Dictionary::new();
    opts.set("threads", "1");
    opts.set("flags", "+bitexact");
    if x264 {
        opts.set("preset", "veryfast");
        opts.set("crf", "18");
    } else {
        // About one bit per pixel per second of frames: visually clean.
        enc.set_bit_rate((spec.width * spec.height * spec.fps) as usize / 2);
    }
    let mut venc = enc
        .open_as_with(codec, opts)
        .map_err(|e| format!("cannot open the video encoder: {e}"))?;
    ost.set_parameters(&venc);
    ost.set_time_base(tb);
    let mut aac = AacEncoder::add(&mut octx, rate)?;
    octx.write_header_with(header_options())
        .map_err(|e| e.to_string())?;
    let vtb = octx.stream(vindex).expect("added").time_base();

    let mut scaler = Scaler::get(
        Pixel::RGB24,
        spec.width,
        spec.height,
        Pixel::YUV420P,
        spec.width,
        spec.height,
        Flags::BICUBIC | Flags::ACCURATE_RND,
    )
    .map_err(|e| e.to_string())?;
    let mut rgb = frame::Video::new(Pixel::RGB24, spec.width, spec.height);
    let mut yuv = frame::Video::empty();
    let row = spec.width as usize * 3;
    let mut packet = Packet::empty();
    let mut write_ready =
        |venc: &mut encoder::Video, octx: &mut format::context::Output| -> Result<(), String> {
            while venc.receive_packet(&mut packet).is_ok() {
                packet.set_stream(vindex);
                packet.rescale_ts(tb, vtb);
                packet.write_interleaved(octx).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
    for (i, data) in frames.iter().enumerate() {
        if data.len() != row * spec.height as usize {
            return Err(format!(
                "frame {i} has {} bytes, expected {}",
                data.len(),
                row * spec.height as usize
            ));
        }
        let stride = rgb.stride(0);
        let plane = rgb.data_mut(0);
        for y in 0..spec.height as usize {
            plane[y * stride..y * stride + row].copy_from_slice(&data[y * row..(y + 1) * row]);
        }
        scaler.run(&rgb, &mut yuv).map_err(|e| e.to_string())?;
        yuv.set_pts(Some(i as i64));
        venc.send_frame(&yuv).map_err(|e| e.to_string())?;
        write_ready(&mut venc, &mut octx)?;
    }
    venc.send_eof().map_err(|e| e.to_string())?;
    write_ready(&mut venc, &mut octx)?;
    aac.encode_all(&mut octx, audio)?;
    octx.write_trailer().map_err(|e| e.to_string())
}
