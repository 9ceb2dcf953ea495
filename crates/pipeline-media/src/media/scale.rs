//! Pixel-format conversion to packed RGB and bicubic resizing with swscale.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::software::scaling::{Context, Flags};

/// A packed RGB24 image, rows without padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` bytes, row-major, R G B.
    pub data: Vec<u8>,
}

/// Converts decoded frames to RGB24 at a target size (or their own size),
/// bicubic; the swscale context is reused while the input geometry holds.
pub struct ToRgb {
    size: Option<(u32, u32)>,
    ctx: Option<(Context, (Pixel, u32, u32))>,
}

impl ToRgb {
    /// `size = None` keeps each frame's own width and height.
    pub fn new(size: Option<(u32, u32)>) -> Self {
        ToRgb { size, ctx: None }
    }

    /// Converts one decoded frame.
    pub fn convert(&mut self, input: &frame::Video) -> Result<RgbImage, String> {
        let key = (input.format(), input.width(), input.height());
        let (w, h) = self.size.unwrap_or((key.1, key.2));
        if self.ctx.as_ref().map(|c| c.1) != Some(key) {
            let ctx = Context::get(key.0, key.1, key.2, Pixel::RGB24, w, h, Flags::BICUBIC)
                .map_err(|e| {
                    format!("cannot convert {:?} {}x{} to RGB: {e}", key.0, key.1, key.2)
                })?;
            self.ctx = Some((ctx, key));
        }
        let (ctx, _) = self.ctx.as_mut().expect("set above");
        let mut out = frame::Video::empty();
        ctx.run(input, &mut out)
            .map_err(|e| format!("frame conversion failed: {e}"))?;
        let stride = out.stride(0);
        let row = w as usize * 3;
        let plane = out.data(0);
        let mut data = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(RgbImage {
            width: w,
            height: h,
            data,
        })
    }
}
