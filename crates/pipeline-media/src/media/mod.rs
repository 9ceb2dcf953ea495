//! FFmpeg-backed media: decoding, resampling, log-mel, frame sampling and
//! resizing, encoding and muxing. Knows nothing about the engine or the store:
//! every function takes paths and plain numbers and returns plain data or a
//! [`MediaError`].

pub mod decode;
pub mod element;
pub mod embed;
pub mod encode;
pub mod error;
pub mod frames;
pub mod layout;
pub mod mel;
pub mod mux;
pub mod resample;
pub mod scale;
pub mod stats;
pub mod wav;

pub use error::MediaError;

use std::sync::Once;

/// Initialises FFmpeg once per process and keeps its own logging quiet: a
/// corrupt file is reported through [`MediaError`], not through stderr noise.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registration cannot fail on FFmpeg >= 4; the result only reports
        // legacy device registration.
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}
