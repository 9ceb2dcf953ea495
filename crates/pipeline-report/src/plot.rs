//! The report's figures, drawn with plotters into memory and encoded as PNG.
//! Text is set in the DejaVu Sans shipped in `assets/` (registered once), so
//! the same inputs give the same bytes on every machine.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// The series colours, in order (colour-blind-safe, after Okabe and Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
];

pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() -> Result<()> {
    static FONT_READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *FONT_READY
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the report's font (assets/DejaVuSans.ttf) could not be loaded"
        ))
    }
}

/// A plotters error as an anyhow one (their errors are not `Send`).
fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Draws into an RGB buffer of `w` x `h` and returns it as PNG.
fn png(
    w: u32,
    h: u32,
    draw: impl FnOnce(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_font()?;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        draw(root.clone())?;
        root.present().map_err(pe)?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&buf)?;
    writer.finish()?;
    Ok(out)
}

/// The ROC curve of `scores` (higher = fake) against `labels` (true = fake):
/// (false positive rate, true positive rate) from (0, 0) to (1, 1), one point
/// per distinct score. `None` without both classes.
pub fn roc_points(scores: &[f64], labels: &[bool]) -> Option<Vec<(f64, f64)>> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![(0.0, 0.0)];
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let tie_next = order.get(k + 1).is_some_and(|&j| scores[j] == scores[i]);
        if !tie_next {
            points.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
        }
    }
    Some(points)
}

/// One line of a figure.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBColor,
}

/// ROC curves with the chance diagonal.
pub fn roc(title: &str, lines: &[Line]) -> Result<Vec<u8>> {
    png(560, 460, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1.001f64)
            .map_err(pe)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (real clips called fake)")
            .y_desc("true positive rate")
            .label_style((FAMILY, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(pe)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(pe)?;
        for l in lines {
            let c = l.colour;
            chart
                .draw_series(LineSeries::new(l.points.iter().copied(), c.stroke_width(2)))
                .map_err(pe)?
                .label(&l.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(pe)
    })
}

/// Training loss (left) and validation metric (right) per epoch, with the
/// selected epoch marked.
pub fn training(
    title: &str,
    losses: &[(f64, f64)],
    vals: &[(f64, f64)],
    val_name: &str,
    best_epoch: Option<f64>,
) -> Result<Vec<u8>> {
    png(880, 360, |root| {
        root.titled(title, (FAMILY, 20)).map_err(pe)?;
        let panels = root.margin(30, 0, 0, 0).split_evenly((1, 2));
        let last = losses
            .iter()
            .chain(vals)
            .map(|p| p.0)
            .fold(1.0f64, f64::max);
        let panel = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                     points: &[(f64, f64)],
                     desc: &str,
                     c: RGBColor|
         -> Result<()> {
            let (lo, hi) = span(points);
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..last, lo..hi)
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_desc(desc)
                .label_style((FAMILY, 13))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(pe)?;
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                .map_err(pe)?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(pe)?;
            if let Some(b) = best_epoch {
                chart
                    .draw_series(LineSeries::new([(b, lo), (b, hi)], BLACK.mix(0.5)))
                    .map_err(pe)?;
            }
            Ok(())
        };
        panel(&panels[0], losses, "training loss", colour(0))?;
        panel(&panels[1], vals, val_name, colour(2))
    })
}

/// A y range around `points` with a little room.
fn span(points: &[(f64, f64)]) -> (f64, f64) {
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Grouped bars: for each group, one bar per series (values in [0, 1]).
pub fn bars(title: &str, groups: &[String], series: &[(String, Vec<f64>)]) -> Result<Vec<u8>> {
    png(880, 400, |root| {
        let n = groups.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..1.2f64)
            .map_err(pe)?;
        let names = groups.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                let centre = (x - x.floor() - 0.5).abs() < 1e-6;
                match names.get(i) {
                    Some(g) if centre => g.clone(),
                    _ => String::new(),
                }
            })
            .y_desc("mean fusion weight")
            .label_style((FAMILY, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(pe)?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (s, (label, values)) in series.iter().enumerate() {
            let c = colour(s);
            chart
                .draw_series(values.iter().enumerate().map(|(g, &v)| {
                    let x0 = g as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], c.filled())
                }))
                .map_err(pe)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(pe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roc_of_a_perfect_and_of_a_tied_score() {
        let perfect = roc_points(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]).unwrap();
        assert_eq!(
            perfect,
            vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
        );
        // One score for every clip: a single step from (0, 0) to (1, 1).
        let tied = roc_points(&[0.5; 4], &[true, false, true, false]).unwrap();
        assert_eq!(tied, vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!(roc_points(&[0.1, 0.2], &[true, true]).is_none());
    }

    #[test]
    fn a_figure_is_a_png_and_the_same_bytes_twice() {
        let line = || Line {
            label: "fused AUC 0.750".into(),
            points: roc_points(&[0.9, 0.3, 0.6, 0.1], &[true, true, false, false]).unwrap(),
            colour: colour(0),
        };
        let a = roc("ROC", &[line()]).unwrap();
        let b = roc("ROC", &[line()]).unwrap();
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a, b);
        let d = png::Decoder::new(std::io::Cursor::new(&a));
        let info = d.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (560, 460));
    }
}
