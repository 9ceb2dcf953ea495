//! Sample-rate conversion with swresample, keeping the channels apart so the
//! down-mix is the plain mean of the channels (swresample's own mono down-mix
//! weights stereo by 1/sqrt(2), which is not the reference's semantics).

use ffmpeg_next::ffi;
use ffmpeg_next::frame;

/// Converts decoded audio frames of any sample format to mono `f32` at a
/// fixed output rate. The input format, layout or rate may change between
/// frames; the converter is rebuilt (after draining) when it does.
pub struct MonoResampler {
    out_rate: u32,
    swr: Option<Swr>,
    scratch: Vec<f32>,
}

struct Swr {
    ctx: *mut ffi::SwrContext,
    key: (i32, u64, usize, u32),
}

// The context is owned by one `MonoResampler` and never shared.
unsafe impl Send for Swr {}

impl Drop for Swr {
    fn drop(&mut self) {
        unsafe { ffi::swr_free(&mut self.ctx) };
    }
}

impl MonoResampler {
    /// A resampler producing mono samples at `out_rate` Hz.
    pub fn new(out_rate: u32) -> Self {
        MonoResampler {
            out_rate,
            swr: None,
            scratch: Vec::new(),
        }
    }

    /// Converts one decoded frame, appending mono samples to `out`.
    pub fn push(&mut self, input: &frame::Audio, out: &mut Vec<f32>) -> Result<(), String> {
        let channels = input.channels() as usize;
        if channels == 0 || input.samples() == 0 {
            return Ok(());
        }
        let format = unsafe { (*input.as_ptr()).format };
        let mut layout = input.channel_layout().bits();
        if layout == 0 || layout.count_ones() as usize != channels {
            layout = unsafe { ffi::av_get_default_channel_layout(channels as i32) } as u64;
        }
        let rate = input.rate();
        if rate == 0 {
            return Err("audio frame has no sample rate".into());
        }
        let key = (format, layout, channels, rate);
        if self.swr.as_ref().map(|s| s.key) != Some(key) {
            self.finish(out)?;
            self.swr = Some(Swr::new(key, self.out_rate)?);
        }
        let swr = self.swr.as_ref().expect("set above");
        let data = unsafe { (*input.as_ptr()).extended_data as *mut *const u8 };
        convert(
            swr,
            channels,
            data,
            input.samples() as i32,
            &mut self.scratch,
            out,
        )
    }

    /// Drains the samples still held inside the converter.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        if let Some(swr) = self.swr.take() {
            let channels = swr.key.2;
            convert(
                &swr,
                channels,
                std::ptr::null_mut(),
                0,
                &mut self.scratch,
                out,
            )?;
        }
        Ok(())
    }
}

impl Swr {
    fn new(key: (i32, u64, usize, u32), out_rate: u32) -> Result<Swr, String> {
        let (format, layout, _, rate) = key;
        unsafe {
            let ctx = ffi::swr_alloc_set_opts(
                std::ptr::null_mut(),
                layout as i64,
                ffi::AVSampleFormat::AV_SAMPLE_FMT_FLT,
                out_rate as i32,
                layout as i64,
                std::mem::transmute::<i32, ffi::AVSampleFormat>(format),
                rate as i32,
                0,
                std::ptr::null_mut(),
            );
            if ctx.is_null() {
                return Err("cannot allocate the audio resampler".into());
            }
            // Owned from here on, so the error path below frees it.
            let swr = Swr { ctx, key };
            let e = ffi::swr_init(swr.ctx);
            if e < 0 {
                return Err(format!(
                    "cannot set up the audio resampler: {}",
                    ffmpeg_next::Error::from(e)
                ));
            }
            Ok(swr)
        }
    }
}

fn convert(
    swr: &Swr,
    channels: usize,
    data: *mut *const u8,
    in_count: i32,
    scratch: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    loop {
        let room = unsafe { ffi::swr_get_out_samples(swr.ctx, in_count) }.max(0) as usize + 64;
        scratch.resize(room * channels, 0.0);
        let mut out_ptr = scratch.as_mut_ptr() as *mut u8;
        let n = unsafe {
            ffi::swr_convert(
                swr.ctx,
                &mut out_ptr,
                room as i32,
                if in_count > 0 {
                    data
                } else {
                    std::ptr::null_mut()
                },
                in_count,
            )
        };
        if n < 0 {
            return Err(format!(
                "audio resampling failed: {}",
                ffmpeg_next::Error::from(n)
            ));
        }
        let n = n as usize;
        let inv = 1.0 / channels as f32;
        out.extend(
            scratch[..n * channels]
                .chunks_exact(channels)
                .map(|c| c.iter().sum::<f32>() * inv),
        );
        // Input is consumed whole by one call; only draining may need more.
        if in_count > 0 || n == 0 {
            return Ok(());
        }
    }
}
