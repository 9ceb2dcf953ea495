//! FFmpeg-backed media: decoding, resampling, log-mel, frame sampling, muxing.
//! Knows nothing about the engine or the store.
