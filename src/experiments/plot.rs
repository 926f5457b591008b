//! Line charts as PNG (plotters, with DejaVu Sans embedded so no system font is needed).
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line of a chart: its label and (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// An RGB buffer of (w, h) as a PNG file, written atomically.
fn write_png(path: &Path, (w, h): (u32, u32), rgb: Vec<u8>) -> Result<()> {
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| anyhow!("{}: a {w}x{h} chart buffer of the wrong size", path.display()))?;
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png).map_err(|e| anyhow!("{}: cannot encode PNG: {e}", path.display()))?;
    crate::util::write_atomic(path, png.get_ref())
}

/// Draws the series into `path` (PNG, written atomically).
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    register_font();
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if pts.is_empty() {
        return Err(anyhow!("{}: nothing to plot", path.display()));
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let pad = ((y1 - y0) * 0.1).max(0.5);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let mut buf = vec![0u8; 800 * 500 * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (800, 500)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("{}: cannot draw: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 14)).draw().map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    write_png(path, (800, 500), buf)
}

/// Classes named in a scatter plot's legend (the rest are counted in its last row).
const LEGEND_ROWS: usize = 30;

/// A scatter plot of 2-D points coloured by class (`labels` index `class_names`), with a legend.
pub fn scatter_chart(path: &Path, title: &str, points: &[[f32; 2]], labels: &[i64], class_names: &[String]) -> Result<()> {
    register_font();
    if points.is_empty() {
        return Err(anyhow!("{}: nothing to plot", path.display()));
    }
    let (x0, x1) = points.iter().fold((f32::MAX, f32::MIN), |a, p| (a.0.min(p[0]), a.1.max(p[0])));
    let (y0, y1) = points.iter().fold((f32::MAX, f32::MIN), |a, p| (a.0.min(p[1]), a.1.max(p[1])));
    let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
    let mut buf = vec![0u8; 900 * 800 * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (900, 800)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("{}: cannot draw: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart =
            ChartBuilder::on(&root).caption(title, ("sans-serif", 22)).margin(15).build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py)).map_err(|e| err(&e))?;
        let classes = labels.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
        for c in 0..classes {
            let color = Palette99::pick(c).to_rgba();
            let name = class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
            let pts = points.iter().zip(labels).filter(|(_, &l)| l == c as i64).map(|(p, _)| (p[0], p[1]));
            let series = chart.draw_series(pts.map(|p| Circle::new(p, 2, color.filled()))).map_err(|e| err(&e))?;
            // the legend names as many classes as fit beside the plot
            if c < LEGEND_ROWS {
                series.label(name).legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            }
        }
        if classes > LEGEND_ROWS {
            let more = chart.draw_series(std::iter::empty::<Circle<(f32, f32), i32>>()).map_err(|e| err(&e))?;
            more.label(format!("… and {} more classes", classes - LEGEND_ROWS)).legend(|(x, y)| PathElement::new(vec![(x, y)], WHITE));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    write_png(path, (900, 800), buf)
}
