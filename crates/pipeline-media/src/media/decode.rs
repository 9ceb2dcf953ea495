//! Opening any container FFmpeg reads: probing its streams, decoding its audio
//! to mono at a fixed rate, and decoding the video frames at given indices in
//! one forward pass that stops after the last index it needs.
//!
//! Frame index `n` is the `n`-th frame the decoder outputs (presentation
//! order), as the `ffmpeg` CLI's `select=eq(n\,N)` and Python video readers
//! count them; a variable-frame-rate file is indexed the same way.
//!
//! A truncated file that FFmpeg still opens (an MP4 with its index at the
//! front, a Matroska file cut short) yields fewer packets than its headers
//! promise; a cut MPEG-TS or WAV file is told by its byte layout. [`decode_clip`] checks what it read against what the
//! container declares and fails with [`MediaError::Truncated`] instead of
//! padding the gap: see [`Coverage::check`] for the rule and its tolerances.

use std::path::Path;

use ffmpeg_next::codec;
use ffmpeg_next::format;
use ffmpeg_next::frame;
use ffmpeg_next::media::Type;
use ffmpeg_next::Packet;

use super::resample::MonoResampler;
use super::scale::{RgbImage, ToRgb};
use super::MediaError;

/// Consecutive demuxer errors after which a file is read as ended: a damaged
/// file must not keep the reader looping.
const MAX_READ_ERRORS: usize = 64;

/// A stream (or the container) may end this much before its declared
/// duration without the file counting as truncated: headers round, edit
/// lists trim a frame, an audio track stops a few packets early.
const SHORTFALL_SECONDS: f64 = 0.5;
/// ... or this fraction of the declared duration, whichever is larger.
const SHORTFALL_FRACTION: f64 = 0.05;
/// Unreadable or undecodable packets tolerated, as a fraction of the packets
/// read; a stream cut mid-GOP or a single damaged packet stays below it.
const BAD_PACKET_FRACTION: f64 = 0.01;
/// ... and in any case this many.
const BAD_PACKETS_ALLOWED: usize = 2;

/// What a media file holds, from its headers (no decoding).
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

/// The best video stream's geometry and timing.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Average frame rate (frames per second).
    pub fps: f64,
    /// Frame count from the container, or duration x rate when it has none.
    pub frames: u64,
    pub duration_sec: f64,
    /// The codec's short name (`h264`, `mpeg4`).
    pub codec: String,
    /// Bits per second from the stream's header (0 when it does not say).
    pub bit_rate: u64,
}

/// The best audio stream's format.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub duration_sec: f64,
    /// The codec's short name (`aac`, `pcm_s16le`).
    pub codec: String,
    /// Bits per second from the stream's header (0 when it does not say).
    pub bit_rate: u64,
}

/// A stream's codec name and header bit rate.
fn codec_of(s: &format::stream::Stream) -> (String, u64) {
    let p = s.parameters();
    let name = ffmpeg_next::codec::decoder::find(p.id())
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("{:?}", p.id()).to_lowercase());
    // SAFETY: `p` borrows the stream's live codec parameters.
    let bit_rate = unsafe { (*p.as_ptr()).bit_rate }.max(0) as u64;
    (name, bit_rate)
}

fn open(path: &Path) -> Result<format::context::Input, MediaError> {
    super::init();
    match std::fs::metadata(path) {
        Err(e) => return Err(MediaError::open(path, e)),
        Ok(m) if m.len() == 0 => return Err(MediaError::open(path, "the file is empty")),
        Ok(_) => {}
    }
    format::input(&path).map_err(|e| MediaError::open(path, e))
}

fn stream_duration(stream: &format::stream::Stream, container_us: i64) -> f64 {
    let tb = stream.time_base();
    if stream.duration() > 0 && tb.denominator() != 0 {
        stream.duration() as f64 * f64::from(tb)
    } else if container_us > 0 {
        container_us as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE)
    } else {
        0.0
    }
}

/// The stream's frame rate: the nominal rate (`r_frame_rate`) when the
/// average rate is within 5% of it (a constant-rate stream whose container
/// duration is off by a frame, as MP4 edit lists make it), else the average
/// (a variable-rate stream).
fn frame_rate(avg: ffmpeg_next::Rational, nominal: ffmpeg_next::Rational) -> f64 {
    let value = |r: ffmpeg_next::Rational| {
        if r.denominator() != 0 && r.numerator() > 0 {
            f64::from(r)
        } else {
            0.0
        }
    };
    let (avg, nominal) = (value(avg), value(nominal));
    if nominal > 0.0 && (avg == 0.0 || (avg - nominal).abs() / nominal < 0.05) {
        nominal
    } else {
        avg
    }
}

/// Reads the headers of `path`.
pub fn probe(path: &Path) -> Result<Probe, MediaError> {
    Ok(probe_input(&open(path)?))
}

fn probe_input(ictx: &format::context::Input) -> Probe {
    let container_us = ictx.duration();
    let video = ictx.streams().best(Type::Video).and_then(|s| {
        let params = codec::Context::from_parameters(s.parameters()).ok()?;
        let v = params.decoder().video().ok()?;
        let fps = frame_rate(s.avg_frame_rate(), s.rate());
        let duration_sec = stream_duration(&s, container_us);
        let frames = if s.frames() > 0 {
            s.frames() as u64
        } else {
            (duration_sec * fps).round().max(0.0) as u64
        };
        let (codec, bit_rate) = codec_of(&s);
        Some(VideoInfo {
            width: v.width(),
            height: v.height(),
            fps,
            frames,
            duration_sec,
            codec,
            bit_rate,
        })
    });
    let audio = ictx.streams().best(Type::Audio).and_then(|s| {
        let params = codec::Context::from_parameters(s.parameters()).ok()?;
        let a = params.decoder().audio().ok()?;
        let (codec, bit_rate) = codec_of(&s);
        Some(AudioInfo {
            sample_rate: a.rate(),
            channels: a.channels(),
            duration_sec: stream_duration(&s, container_us),
            codec,
            bit_rate,
        })
    });
    Probe { video, audio }
}

/// A clip's audio and chosen frames, from one pass over the file.
#[derive(Debug)]
pub struct Clip {
    pub video: VideoInfo,
    pub frames: DecodedFrames,
    /// Mono at the requested rate.
    pub audio: Vec<f32>,
}

/// Opens `path` once, lets `pick` choose the frame indices from the video's
/// headers, then decodes in one pass over the packets: all of the audio
/// (mono at `rate` Hz) and the video up to the last picked frame (converted
/// to RGB at `size`). A file without both streams is an error.
pub fn decode_clip(
    path: &Path,
    rate: u32,
    size: Option<(u32, u32)>,
    pick: impl FnOnce(&VideoInfo) -> Result<Vec<usize>, MediaError>,
) -> Result<Clip, MediaError> {
    let mut ictx = open(path)?;
    let probe = probe_input(&ictx);
    let no = |kind| MediaError::NoStream {
        path: path.to_path_buf(),
        kind,
    };
    let video = probe.video.ok_or_else(|| no("video"))?;
    probe.audio.ok_or_else(|| no("audio"))?;
    let indices = pick(&video)?;
    let vs = ictx
        .streams()
        .best(Type::Video)
        .ok_or_else(|| no("video"))?;
    let as_ = ictx
        .streams()
        .best(Type::Audio)
        .ok_or_else(|| no("audio"))?;
    let (vi, ai) = (vs.index(), as_.index());
    let mut vdec = codec::Context::from_parameters(vs.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| MediaError::decode(path, format!("cannot open the video decoder: {e}")))?;
    let adec = codec::Context::from_parameters(as_.parameters())
        .and_then(|c| c.decoder().audio())
        .map_err(|e| MediaError::decode(path, format!("cannot open the audio decoder: {e}")))?;
    let mut collector = Collector::new(&indices, size);
    let mut track = AudioTrack::new(adec, rate);
    let mut more_video = !indices.is_empty();
    let mut coverage = Coverage::default();
    for_each_packet(&mut ictx, &mut coverage, |packet| {
        let s = packet.stream();
        // A damaged packet is skipped, as the ffmpeg CLI does, and counted.
        if s == ai {
            track.send(packet);
        } else if s == vi && more_video {
            match vdec.send_packet(packet) {
                Ok(()) => more_video = collector.drain(&mut vdec),
                Err(e) => collector.decode_errors += usize::from(is_decode_error(&e)),
            }
        }
        track.failure.is_none()
    });
    if more_video && vdec.send_eof().is_ok() {
        collector.drain(&mut vdec);
    }
    track.end(path)?;
    coverage.decode_errors = track.errors + collector.decode_errors;
    coverage.check_complete(path, &ictx, &[(vi, "video"), (ai, "audio")])?;
    let audio = track.samples(path)?;
    let frames = collector.finish(path)?;
    Ok(Clip {
        video,
        frames,
        audio,
    })
}

/// Reads packets until the end or until `f` says stop, tolerating a bounded
/// run of demuxer errors (a truncated or damaged file ends early instead).
/// `coverage` counts the packets, the read errors and where each stream's
/// packets end.
fn for_each_packet(
    ictx: &mut format::context::Input,
    coverage: &mut Coverage,
    mut f: impl FnMut(&Packet) -> bool,
) {
    let mut errors = 0;
    loop {
        let mut packet = Packet::empty();
        match packet.read(ictx) {
            Ok(()) => {
                errors = 0;
                coverage.packet(&packet);
                if !f(&packet) {
                    return;
                }
            }
            Err(ffmpeg_next::Error::Eof) => return,
            Err(_) => {
                errors += 1;
                coverage.read_errors += 1;
                if errors >= MAX_READ_ERRORS {
                    return;
                }
            }
        }
    }
}

/// True for a decoder error that means a damaged packet, not "feed me more"
/// or "no more frames".
fn is_decode_error(e: &ffmpeg_next::Error) -> bool {
    !matches!(
        e,
        ffmpeg_next::Error::Eof
            | ffmpeg_next::Error::Other {
                errno: ffmpeg_next::util::error::EAGAIN
            }
    )
}

/// What one pass over a file's packets saw, to tell a complete file from a
/// cut or damaged one.
#[derive(Debug, Default)]
struct Coverage {
    /// Packets read without error.
    packets: usize,
    /// `av_read_frame` errors other than the end of the file.
    read_errors: usize,
    /// Packets a decoder rejected or could not turn into frames.
    decode_errors: usize,
    /// Per stream index: what was read of it.
    streams: Vec<StreamCoverage>,
}

#[derive(Clone, Debug, Default)]
struct StreamCoverage {
    packets: usize,
    /// The end (pts + duration, in the stream's time base) of the latest
    /// packet read.
    end: Option<i64>,
}

impl Coverage {
    fn packet(&mut self, packet: &Packet) {
        self.packets += 1;
        let i = packet.stream();
        if self.streams.len() <= i {
            self.streams.resize(i + 1, StreamCoverage::default());
        }
        let s = &mut self.streams[i];
        s.packets += 1;
        if let Some(ts) = packet.pts().or(packet.dts()) {
            let end = ts.saturating_add(packet.duration().max(0));
            s.end = Some(s.end.map_or(end, |e| e.max(end)));
        }
    }

    /// [`Coverage::check`], then the byte layout of the containers that
    /// declare no duration of their own ([`super::layout`]).
    fn check_complete(
        &self,
        path: &Path,
        ictx: &format::context::Input,
        used: &[(usize, &'static str)],
    ) -> Result<(), MediaError> {
        self.check(ictx, used)
            .and_then(|()| super::layout::check(path, ictx.format().name()))
            .map_err(|reason| MediaError::Truncated {
                path: path.to_path_buf(),
                reason,
            })
    }

    fn end(&self, index: usize) -> Option<i64> {
        self.streams.get(index)?.end
    }

    /// Seconds from the stream's start to the end of its last packet read.
    fn stream_seconds(&self, stream: &format::stream::Stream) -> Option<f64> {
        let end = self.end(stream.index())?;
        let tb = stream.time_base();
        if tb.denominator() == 0 {
            return None;
        }
        let start = match stream.start_time() {
            ffmpeg_next::ffi::AV_NOPTS_VALUE => 0,
            s => s,
        };
        Some(end.saturating_sub(start) as f64 * f64::from(tb))
    }

    /// Fails a file that ended before what its headers declare, or whose
    /// packets could not be read or decoded, beyond the tolerances above.
    ///
    /// Four checks. Each of the `used` streams that counts its packets in an
    /// index (MP4's sample table, AVI's index) must yield all of them but the
    /// bad-packet allowance: a faststart MP4 cut short keeps its whole index,
    /// and the demuxer just reaches the end of the file early. Each of them
    /// that declares its own duration must be read to within the shortfall of
    /// it; all packets read together must reach the container's duration
    /// within the shortfall (Matroska declares only that one). And the read
    /// plus decode errors must stay under the bad-packet allowance.
    ///
    /// A clip shorter than the element window is not truncated: it declares
    /// its own short duration and holds it. A cut MPEG-TS declares nothing
    /// (FFmpeg estimates its duration from the last timestamps present) and
    /// a cut WAV is sized by the file: [`super::layout`] checks those two by
    /// their bytes.
    fn check(
        &self,
        ictx: &format::context::Input,
        used: &[(usize, &'static str)],
    ) -> Result<(), String> {
        let short = |declared: f64, got: f64| {
            declared > 0.0 && declared - got > SHORTFALL_SECONDS.max(SHORTFALL_FRACTION * declared)
        };
        let too_many_bad = |bad: usize, total: usize| {
            bad > BAD_PACKETS_ALLOWED && bad as f64 > BAD_PACKET_FRACTION * total as f64
        };
        for &(index, kind) in used {
            let Some(stream) = ictx.stream(index) else {
                continue;
            };
            let indexed = usize::try_from(stream.frames()).unwrap_or(0);
            let read = self.streams.get(index).map_or(0, |s| s.packets);
            if indexed > 0 && too_many_bad(indexed.saturating_sub(read), indexed) {
                return Err(format!(
                    "truncated: read {read} of the {indexed} {kind} packets the container indexes"
                ));
            }
            let tb = stream.time_base();
            if stream.duration() <= 0 || tb.denominator() == 0 {
                continue;
            }
            let declared = stream.duration() as f64 * f64::from(tb);
            let got = self.stream_seconds(&stream).unwrap_or(0.0);
            if short(declared, got) {
                return Err(format!(
                    "truncated: read {got:.2} s of {kind} out of the {declared:.2} s the stream declares"
                ));
            }
        }
        let container_us = ictx.duration();
        if container_us > 0 {
            let declared = container_us as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE);
            // The container starts where its earliest stream does.
            let start = ictx
                .streams()
                .filter(|s| {
                    s.start_time() != ffmpeg_next::ffi::AV_NOPTS_VALUE
                        && s.time_base().denominator() != 0
                })
                .map(|s| s.start_time() as f64 * f64::from(s.time_base()))
                .reduce(f64::min)
                .unwrap_or(0.0);
            let got = ictx
                .streams()
                .filter_map(|s| {
                    let end = self.end(s.index())?;
                    let tb = s.time_base();
                    (tb.denominator() != 0).then(|| end as f64 * f64::from(tb) - start)
                })
                .fold(0.0, f64::max);
            if short(declared, got) {
                return Err(format!(
                    "truncated: read {got:.2} s out of the {declared:.2} s the container declares"
                ));
            }
        }
        let bad = self.read_errors + self.decode_errors;
        let total = self.packets + self.read_errors;
        if too_many_bad(bad, total) {
            return Err(format!(
                "truncated or damaged: {bad} of {total} packets could not be read or decoded \
                 ({} read errors, {} decode errors)",
                self.read_errors, self.decode_errors
            ));
        }
        Ok(())
    }
}

/// Decodes the best audio stream of `path`, down-mixed to mono (mean of the
/// channels) and resampled to `rate` Hz.
pub fn decode_audio_mono(path: &Path, rate: u32) -> Result<Vec<f32>, MediaError> {
    let mut ictx = open(path)?;
    let stream = ictx
        .streams()
        .best(Type::Audio)
        .ok_or(MediaError::NoStream {
            path: path.to_path_buf(),
            kind: "audio",
        })?;
    let index = stream.index();
    let decoder = codec::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().audio())
        .map_err(|e| MediaError::decode(path, format!("cannot open the audio decoder: {e}")))?;
    let mut track = AudioTrack::new(decoder, rate);
    let mut coverage = Coverage::default();
    for_each_packet(&mut ictx, &mut coverage, |packet| {
        if packet.stream() == index {
            track.send(packet);
        }
        track.failure.is_none()
    });
    track.end(path)?;
    // A file cut short but still readable would otherwise give a short
    // signal: a converted voice or a speaker embedding of part of a clip.
    coverage.decode_errors = track.errors;
    coverage.check_complete(path, &ictx, &[(index, "audio")])?;
    track.samples(path)
}

/// One audio stream decoded to mono samples at a fixed rate. A damaged
/// packet is skipped, as the ffmpeg CLI does, and counted in `errors`; the
/// first resampling failure is kept and stops the reading.
struct AudioTrack {
    decoder: ffmpeg_next::decoder::Audio,
    resampler: MonoResampler,
    frame: frame::Audio,
    samples: Vec<f32>,
    failure: Option<String>,
    errors: usize,
}

impl AudioTrack {
    fn new(decoder: ffmpeg_next::decoder::Audio, rate: u32) -> Self {
        Self {
            decoder,
            resampler: MonoResampler::new(rate),
            frame: frame::Audio::empty(),
            samples: Vec::new(),
            failure: None,
            errors: 0,
        }
    }

    fn send(&mut self, packet: &Packet) {
        match self.decoder.send_packet(packet) {
            Ok(()) => self.drain(),
            Err(e) => self.errors += usize::from(is_decode_error(&e)),
        }
    }

    fn drain(&mut self) {
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    if let Err(e) = self.resampler.push(&self.frame, &mut self.samples) {
                        self.failure.get_or_insert(e);
                    }
                }
                Err(e) => {
                    self.errors += usize::from(is_decode_error(&e));
                    break;
                }
            }
        }
    }

    /// Flushes the decoder; fails on a resampling failure.
    fn end(&mut self, path: &Path) -> Result<(), MediaError> {
        if self.decoder.send_eof().is_ok() {
            self.drain();
        }
        match self.failure.take() {
            Some(e) => Err(MediaError::decode(path, e)),
            None => Ok(()),
        }
    }

    /// The samples, the resampler's tail included; none at all is an error.
    fn samples(mut self, path: &Path) -> Result<Vec<f32>, MediaError> {
        self.resampler
            .finish(&mut self.samples)
            .map_err(|e| MediaError::decode(path, e))?;
        if self.samples.is_empty() {
            return Err(MediaError::decode(
                path,
                "no audio could be decoded (the file may be truncated or corrupt)",
            ));
        }
        Ok(self.samples)
    }
}

/// Decoded video frames at the requested indices.
#[derive(Debug)]
pub struct DecodedFrames {
    /// One image per requested index, in the order requested.
    pub images: Vec<RgbImage>,
    /// How many frames were decoded before stopping.
    pub decoded: usize,
    /// Requested indices past the last frame, served with the last frame.
    pub clamped: usize,
}

/// Decodes the frames of the best video stream at `indices` (any order,
/// repeats allowed), converted to RGB and resized bicubic to `size` (or kept
/// at their own size). Decoding stops after the largest index. An index past
/// the last frame the file really holds gets the last frame (the frame count
/// in a header is an estimate); a file with no decodable frame is an error.
pub fn decode_frames(
    path: &Path,
    indices: &[usize],
    size: Option<(u32, u32)>,
) -> Result<DecodedFrames, MediaError> {
    let mut ictx = open(path)?;
    let stream = ictx
        .streams()
        .best(Type::Video)
        .ok_or(MediaError::NoStream {
            path: path.to_path_buf(),
            kind: "video",
        })?;
    let index = stream.index();
    let mut decoder = codec::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| MediaError::decode(path, format!("cannot open the video decoder: {e}")))?;
    let mut collector = Collector::new(indices, size);
    if !indices.is_empty() {
        let mut more = true;
        for_each_packet(&mut ictx, &mut Coverage::default(), |packet| {
            // A damaged packet is skipped, as the ffmpeg CLI does.
            if packet.stream() == index && decoder.send_packet(packet).is_ok() {
                more = collector.drain(&mut decoder);
            }
            more
        });
        if more && decoder.send_eof().is_ok() {
            collector.drain(&mut decoder);
        }
    }
    collector.finish(path)
}

/// Serves requested indices while frames come out of the decoder.
struct Collector<'a> {
    indices: &'a [usize],
    /// Positions into `indices`, sorted by index.
    order: Vec<usize>,
    next: usize,
    decoded: usize,
    images: Vec<Option<RgbImage>>,
    to_rgb: ToRgb,
    frame: frame::Video,
    /// The previous decoded frame, kept (by reference, not converted) in case
    /// an index lies past the end of the stream.
    last: Option<frame::Video>,
    failure: Option<String>,
    /// Packets the decoder rejected or failed to decode.
    decode_errors: usize,
}

impl<'a> Collector<'a> {
    fn new(indices: &'a [usize], size: Option<(u32, u32)>) -> Self {
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by_key(|&i| indices[i]);
        Collector {
            indices,
            order,
            next: 0,
            decoded: 0,
            images: vec![None; indices.len()],
            to_rgb: ToRgb::new(size),
            frame: frame::Video::empty(),
            last: None,
            failure: None,
            decode_errors: 0,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.order.len() || self.failure.is_some()
    }

    /// Takes every frame the decoder has ready; false once nothing more is needed.
    fn drain(&mut self, decoder: &mut ffmpeg_next::decoder::Video) -> bool {
        while !self.done() {
            if let Err(e) = decoder.receive_frame(&mut self.frame) {
                self.decode_errors += usize::from(is_decode_error(&e));
                break;
            }
            if self.indices[self.order[self.next]] == self.decoded {
                match self.to_rgb.convert(&self.frame) {
                    Ok(img) => self.serve(self.decoded, img),
                    Err(e) => self.failure = Some(e),
                }
            }
            self.decoded += 1;
            let last = self.last.get_or_insert_with(frame::Video::empty);
            std::mem::swap(last, &mut self.frame);
        }
        !self.done()
    }

    fn serve(&mut self, n: usize, img: RgbImage) {
        while self.next < self.order.len() && self.indices[self.order[self.next]] <= n {
            self.images[self.order[self.next]] = Some(img.clone());
            self.next += 1;
        }
    }

    fn finish(mut self, path: &Path) -> Result<DecodedFrames, MediaError> {
        if let Some(e) = self.failure {
            return Err(MediaError::decode(path, e));
        }
        let clamped = self.order.len() - self.next;
        if clamped > 0 {
            let Some(last) = self.last.take() else {
                return Err(MediaError::decode(
                    path,
                    "no video frame could be decoded (the file may be truncated or corrupt)",
                ));
            };
            let img = self
                .to_rgb
                .convert(&last)
                .map_err(|e| MediaError::decode(path, e))?;
            self.serve(usize::MAX, img);
        }
        let images = self
            .images
            .into_iter()
            .map(|i| i.expect("served"))
            .collect();
        Ok(DecodedFrames {
            images,
            decoded: self.decoded,
            clamped,
        })
    }
}
