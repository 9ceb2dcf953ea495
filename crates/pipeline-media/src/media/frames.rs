//! Choosing an element's window and its 16 frame indices.
//!
//! The window is 3.2 s starting at a frame drawn uniformly (from a seeded
//! number the caller supplies); a video not longer than the window uses all of
//! it. The 16 indices are the reference's quartile sampler: 8 equal slices of
//! `max(1, floor(L/8))` frames, the `floor(25%)` and `floor(75%)` points of
//! each. For windows shorter than 8 frames the reference's indices run past
//! the window; the fix here clamps them to the video's last frame, so a video
//! of fewer than 8 frames repeats its frames instead of reading past its end.

/// The frames of the 16-frame sample.
pub const N_SAMPLED: usize = 16;

/// An element's window in frames and seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start_frame: usize,
    /// Frames in the window (`L`).
    pub len: usize,
    pub start_sec: f64,
}

/// The window of `seconds` inside a video of `total_frames` at `fps`; `u` in
/// `[0, 1)` picks the start uniformly among the possible starts.
pub fn choose_window(total_frames: usize, fps: f64, seconds: f64, u: f64) -> Window {
    let want = ((seconds * fps).round() as usize).max(1);
    if total_frames <= want || fps <= 0.0 {
        return Window {
            start_frame: 0,
            len: total_frames.max(1),
            start_sec: 0.0,
        };
    }
    let starts = total_frames - want + 1;
    let start = ((u * starts as f64) as usize).min(starts - 1);
    Window {
        start_frame: start,
        len: want,
        start_sec: start as f64 / fps,
    }
}

/// The reference's 16 indices for the window `[start, start + len)`, clamped
/// to `last_frame` (the video's last frame index).
pub fn sample_16_quartile(start: usize, len: usize, last_frame: usize) -> [usize; N_SAMPLED] {
    let seg = (len / 8).max(1);
    let mut out = [0; N_SAMPLED];
    for k in 0..8 {
        let s = start + k * seg;
        out[2 * k] = (s + seg / 4).min(last_frame);
        out[2 * k + 1] = (s + (3 * seg) / 4).min(last_frame);
    }
    out
}
