//! The report's timeline: latency percentiles, outcome rates and upstream hit rate over time,
//! the fault windows shaded, drawn as SVG and rasterised to PNG from that same SVG.

use plotters::prelude::*;

use super::analysis::Bucket;
use super::scenario::{Outcome, ScheduledFault};

const FAULT_SHADE: RGBColor = RGBColor(255, 190, 190);

fn outcome_color(outcome: Outcome) -> RGBColor {
    match outcome {
        Outcome::Ok => RGBColor(46, 139, 87),
        Outcome::Shed => RGBColor(230, 159, 0),
        Outcome::BulkheadFull => RGBColor(204, 121, 167),
        Outcome::BreakerOpen => RGBColor(0, 114, 178),
        Outcome::DeadlineExceeded => RGBColor(86, 180, 233),
        Outcome::UpstreamError => RGBColor(213, 94, 0),
        Outcome::NoResponse => RGBColor(60, 60, 60),
    }
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One plotted line: legend, colour, points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

fn panel(
    area: &Panel<'_>,
    title: &str,
    y_label: &str,
    duration: f64,
    faults: &[ScheduledFault],
    lines: &[Line],
) -> Result<(), String> {
    let top = lines
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..duration.max(0.1), 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(faults.iter().map(|f| {
            Rectangle::new(
                [(f.from.as_secs_f64(), 0.0), (f.until.as_secs_f64(), top)],
                FAULT_SHADE.mix(0.45).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    for (name, color, points) in lines {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the timeline as SVG text.
pub fn timeline_svg(
    title: &str,
    buckets: &[Bucket],
    duration: f64,
    faults: &[ScheduledFault],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 1000)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        let mid = |b: &Bucket| b.t;
        type Pick = fn(&Bucket) -> Option<f64>;
        let latency = [
            ("p50", RGBColor(0, 114, 178), (|b| b.p50_ms) as Pick),
            ("p90", RGBColor(230, 159, 0), (|b| b.p90_ms) as Pick),
            ("p99", RGBColor(213, 94, 0), (|b| b.p99_ms) as Pick),
        ]
        .iter()
        .map(|(name, color, value)| {
            let points = buckets
                .iter()
                .filter_map(|b| Some((mid(b), value(b)?)))
                .collect();
            (name.to_string(), *color, points)
        })
        .collect::<Vec<_>>();
        let outcomes = Outcome::ALL
            .iter()
            .filter(|o| {
                buckets
                    .iter()
                    .any(|b| b.outcomes.get(o).copied().unwrap_or(0.0) > 0.0)
            })
            .map(|o| {
                let points = buckets
                    .iter()
                    .map(|b| (mid(b), b.outcomes.get(o).copied().unwrap_or(0.0)))
                    .collect();
                (o.name().to_owned(), outcome_color(*o), points)
            })
            .collect::<Vec<_>>();
        let traffic = vec![
            (
                "offered (arrivals + retries)".to_owned(),
                RGBColor(120, 120, 120),
                buckets.iter().map(|b| (mid(b), b.offered)).collect(),
            ),
            (
                "reaching the upstream".to_owned(),
                RGBColor(213, 94, 0),
                buckets.iter().map(|b| (mid(b), b.upstream)).collect(),
            ),
        ];
        let [a, b, c] = [panels.first(), panels.get(1), panels.get(2)];
        let (Some(a), Some(b), Some(c)) = (a, b, c) else {
            return Err("drawing area did not split".to_owned());
        };
        panel(
            a,
            "Latency by start time (faults shaded)",
            "ms",
            duration,
            faults,
            &latency,
        )?;
        panel(b, "Outcomes", "attempts / s", duration, faults, &outcomes)?;
        panel(
            c,
            "Upstream hit rate",
            "requests / s",
            duration,
            faults,
            &traffic,
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Rasterises an SVG to PNG bytes with the system's fonts.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // Plotters asks for the generic `sans-serif`; point it at a face this machine has.
    let sans = fonts
        .faces()
        .flat_map(|face| face.families.iter().map(|(name, _)| name.clone()))
        .find(|name| name.contains("Sans") && !name.contains("Mono"))
        .or_else(|| {
            fonts
                .faces()
                .find_map(|face| face.families.first().map(|(name, _)| name.clone()))
        });
    if let Some(sans) = sans {
        fonts.set_sans_serif_family(sans);
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| "empty image".to_owned())?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}
