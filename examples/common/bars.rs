//! Horizontal bar charts, one panel per metric, as SVG: shared by the
//! examples that draw their results (`#[path]`-included).

use plotters::prelude::*;

/// Draws `panels` (a title and one value per label) side by side into an
/// SVG of `size` pixels at `path`, one bar per label.
pub fn bar_panels(
    path: &std::path::Path,
    size: (u32, u32),
    labels: &[String],
    panels: &[(&str, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    let n = labels.len();
    for (area, (title, values)) in areas.iter().zip(panels) {
        let max = values.iter().copied().fold(0.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(150)
            .build_cartesian_2d(0.0..max.max(1e-9), (0..n).into_segmented())?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| match y {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12))
            .draw()?;
        c.draw_series(values.iter().enumerate().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (*v, SegmentValue::Exact(i + 1)),
                ],
                Palette99::pick(i).filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
    }
    root.present()?;
    Ok(())
}
