//! PNG plots with plotters' bitmap backend: throughput bars of a benchmark
//! against its baselines (one panel per group), and the gateway's latency
//! percentiles against offered load. Text is drawn with the DejaVu Sans font
//! embedded in the binary, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::figures::{Figure, LoadPoint};
use crate::report::rate_text;

const WIDTH: u32 = 1200;
const PLATFORM: RGBColor = RGBColor(31, 102, 171);
const BASELINE: RGBColor = RGBColor(150, 150, 150);

fn register_font() -> Result<()> {
    static FONT: Once = Once::new();
    let mut result = Ok(());
    FONT.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font("sans-serif", style, dejavu::sans::regular()).is_err() {
                result = Err(anyhow!("the embedded DejaVu Sans font did not load"));
            }
        }
    });
    result
}

/// Draws into an RGB buffer and writes it to `path` as PNG.
fn write_png(path: &Path, (w, h): (u32, u32), draw: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<()> {
    register_font()?;
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    draw(&mut pixels)?;
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// Horizontal throughput bars: one panel per group, the platform in blue,
/// baselines in grey, each bar labelled with its rate.
pub fn throughput(path: &Path, title: &str, figures: &[Figure]) -> Result<()> {
    let mut groups: Vec<Vec<&Figure>> = Vec::new();
    for f in figures {
        match groups.iter_mut().find(|g| g[0].group == f.group) {
            Some(g) => g.push(f),
            None => groups.push(vec![f]),
        }
    }
    for g in &mut groups {
        g.sort_by_key(|f| f.baseline);
    }
    let heights: Vec<u32> = groups.iter().map(|g| 70 + 36 * g.len() as u32).collect();
    let height = 50 + heights.iter().sum::<u32>();
    write_png(path, (WIDTH, height), |pixels| {
        let root = BitMapBackend::with_buffer(pixels, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 24)).map_err(plot_err)?;
        let mut breaks = Vec::new();
        let mut y = 0;
        for h in &heights[..heights.len() - 1] {
            y += *h as i32;
            breaks.push(y);
        }
        let panels = root.split_by_breakpoints([] as [i32; 0], breaks);
        for (area, group) in panels.iter().zip(&groups) {
            bars(area, group)?;
        }
        root.present().map_err(plot_err)
    })
}

fn bars(area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, group: &[&Figure]) -> Result<()> {
    let max = group.iter().map(|f| f.rate).fold(0.0, f64::max).max(1e-9);
    let n = group.len();
    let caption = format!("{} ({})", group[0].group, group[0].unit);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(400)
        .build_cartesian_2d(0f64..max * 1.22, (0..n - 1).into_segmented())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        // No fine grid: it made the PNGs several times larger for nothing.
        .light_line_style(TRANSPARENT)
        .y_labels(n)
        .y_label_style(("sans-serif", 15))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => group[n - 1 - *i].name.clone(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| rate_text(*x))
        .draw()
        .map_err(plot_err)?;
    // Top to bottom in the order given: segment n-1 is the first figure.
    chart
        .draw_series(group.iter().enumerate().map(|(i, f)| {
            let row = n - 1 - i;
            let color = if f.baseline { BASELINE } else { PLATFORM };
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(row)), (f.rate, SegmentValue::Exact(row + 1))],
                color.filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(group.iter().enumerate().map(|(i, f)| {
            let label = format!(" {}", rate_text(f.rate));
            Text::new(label, (f.rate, SegmentValue::CenterOf(n - 1 - i)), ("sans-serif", 15))
        }))
        .map_err(plot_err)?;
    Ok(())
}

/// One latency percentile of a load point.
type Percentile = fn(&LoadPoint) -> Option<f64>;

/// The gateway's latency percentiles (log scale) against offered load.
pub fn latency_curve(path: &Path, title: &str, curve: &[LoadPoint]) -> Result<()> {
    let height = 560;
    let max_x = curve.iter().map(|p| p.offered_per_s.max(p.acked_per_s)).fold(1.0, f64::max) * 1.05;
    let highs = curve.iter().map(|p| p.p999_ms.unwrap_or(p.p99_ms).max(p.p99_ms));
    let max_y = highs.fold(1.0, f64::max) * 1.5;
    let min_y = curve.iter().map(|p| p.p50_ms).fold(f64::MAX, f64::min).clamp(0.01, max_y) * 0.7;
    write_png(path, (WIDTH, height), |pixels| {
        let root = BitMapBackend::with_buffer(pixels, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x, (min_y..max_y).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("offered load, events/s")
            .y_desc("latency, ms (log scale)")
            .y_labels(12)
            .y_label_formatter(&|y| if *y < 10.0 { format!("{y:.1}") } else { format!("{y:.0}") })
            .x_label_formatter(&|x| rate_text(*x))
            .draw()
            .map_err(plot_err)?;
        let series: [(&str, RGBColor, Percentile); 3] = [
            ("p50", PLATFORM, |p| Some(p.p50_ms)),
            ("p99", RGBColor(214, 96, 39), |p| Some(p.p99_ms)),
            ("p99.9", RGBColor(120, 40, 140), |p| p.p999_ms),
        ];
        for (name, color, value) in series {
            let points: Vec<(f64, f64)> =
                curve.iter().filter_map(|p| value(p).map(|v| (p.offered_per_s, v.max(min_y)))).collect();
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)
    })
}
