//! Faces for the synthetic corpus: a head (identity colour and geometry) with
//! eyes and a mouth whose opening follows a syllable envelope, head motion and
//! sensor noise; optionally a blended mouth region (face-reenactment
//! artifacts: a colour-shifted patch with a soft seam that flickers).

use crate::rng::Rng;

/// The colour of an open mouth's interior, shared by every face (the tests
/// measure the mouth opening by it).
pub const MOUTH_INTERIOR: [f64; 3] = [48.0, 14.0, 22.0];

/// An identity's face.
#[derive(Clone, Debug)]
pub struct Face {
    pub skin: [f64; 3],
    pub background: [f64; 3],
    pub lips: [f64; 3],
    /// Head radii as fractions of the frame.
    pub rx: f64,
    pub ry: f64,
    pub eye_gap: f64,
    pub mouth_width: f64,
}

impl Face {
    pub fn random(rng: &mut Rng) -> Face {
        let tone = rng.range(0.0, 1.0);
        let skin = [
            110.0 + 120.0 * tone,
            80.0 + 100.0 * tone + rng.range(-8.0, 8.0),
            60.0 + 90.0 * tone + rng.range(-8.0, 8.0),
        ];
        let background = [
            rng.range(60.0, 200.0),
            rng.range(60.0, 200.0),
            rng.range(60.0, 200.0),
        ];
        Face {
            skin,
            background,
            lips: [skin[0] * 0.75 + 30.0, skin[1] * 0.5, skin[2] * 0.55],
            rx: rng.range(0.28, 0.34),
            ry: rng.range(0.36, 0.42),
            eye_gap: rng.range(0.12, 0.16),
            mouth_width: rng.range(0.11, 0.15),
        }
    }
}

/// Reenactment artifacts around the mouth.
#[derive(Clone, Copy, Debug)]
pub struct Blend {
    /// Colour shift of the blended patch.
    pub shift: [f64; 3],
}

/// Soft inside-ness of an ellipse: 1 inside, 0 outside, a 1-pixel ramp.
fn ellipse(x: f64, y: f64, cx: f64, cy: f64, rx: f64, ry: f64) -> f64 {
    if rx <= 0.0 || ry <= 0.0 {
        return 0.0;
    }
    let d = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
    let edge = 1.0 / rx.min(ry);
    ((1.0 - d) / edge + 0.5).clamp(0.0, 1.0)
}

fn mix(dst: &mut [f64; 3], src: [f64; 3], a: f64) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += (s - *d) * a;
    }
}

/// Renders one `size`x`size` RGB frame. `open` is the mouth opening (0..1),
/// `head` the head offset in pixels, `blink` closes the eyes.
#[allow(clippy::too_many_arguments)]
pub fn render(
    face: &Face,
    size: usize,
    open: f64,
    head: (f64, f64),
    blink: bool,
    blend: Option<(Blend, f64)>,
    rng: &mut Rng,
) -> Vec<u8> {
    let s = size as f64;
    let (cx, cy) = (s * 0.5 + head.0, s * 0.52 + head.1);
    let (rx, ry) = (face.rx * s, face.ry * s);
    let (mx, my) = (cx, cy + 0.45 * ry);
    let mw = face.mouth_width * s;
    let mh = 0.012 * s + open.clamp(0.0, 1.0) * 0.09 * s;
    let mut out = Vec::with_capacity(size * size * 3);
    for yi in 0..size {
        for xi in 0..size {
            let (x, y) = (xi as f64 + 0.5, yi as f64 + 0.5);
            let shade = 1.0 - 0.15 * (y / s);
            let mut px = face.background.map(|c| c * shade);
            let head_a = ellipse(x, y, cx, cy, rx, ry);
            let mut skin = face.skin;
            if let Some((b, flicker)) = blend {
                // The swapped lower face: a shifted tone inside a soft box.
                let bx = ((mw * 1.6 - (x - mx).abs()) / 3.0).clamp(0.0, 1.0);
                let by = ((mh + 0.09 * s - (y - my).abs()) / 3.0).clamp(0.0, 1.0);
                let a = bx * by * (0.85 + 0.15 * flicker);
                for (k, d) in skin.iter_mut().zip(b.shift) {
                    *k += d * a;
                }
            }
            mix(&mut px, skin, head_a);
            let eye_ry = if blink { 0.008 * s } else { 0.03 * s };
            for ex in [cx - face.eye_gap * s, cx + face.eye_gap * s] {
                let a = ellipse(x, y, ex, cy - 0.2 * ry, 0.045 * s, eye_ry);
                mix(&mut px, [240.0, 240.0, 235.0], a);
                let p = ellipse(x, y, ex, cy - 0.2 * ry, 0.02 * s, eye_ry.min(0.02 * s));
                mix(&mut px, [30.0, 25.0, 20.0], p);
            }
            mix(&mut px, face.lips, ellipse(x, y, mx, my, mw, mh + 0.02 * s));
            mix(
                &mut px,
                MOUTH_INTERIOR,
                ellipse(x, y, mx, my, mw * 0.85, mh),
            );
            for c in px {
                out.push((c + 3.0 * rng.normal()).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}
