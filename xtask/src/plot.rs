//! `cargo xtask bench --plot FILE.svg`: the table's ratios as a picture (plotters, SVG).
//!
//! One line per row, top to bottom in the table's order; the horizontal axis is a log scale of
//! speed-ups oriented so that right of 1× means mp is better: mp over CPython, mp over the
//! Rust peer, and mp against the floor (floor ÷ mp on ↓ rows, mp ÷ floor on ↑ rows, so it
//! is at most about 1×). Each row's targets that are ratios are short vertical bars in the
//! same orientation and in their ratio's colour; a target in the row's own unit has no bar.

use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::rows::Better;
use crate::rows::Target::{Cpython, Floor, Peer, Value};
use crate::table::Results;

/// The width of the picture, in pixels.
const WIDTH: u32 = 1100;

/// The height of one row, in pixels.
const ROW_HEIGHT: u32 = 22;

/// Half the height of a target's mark, in pixels.
const MARK: i32 = 8;

/// The height of everything but the rows, in pixels.
const FRAME_HEIGHT: u32 = 140;

/// The three ratios of a row, oriented so that above 1 means mp is better.
fn ratios(r: &Results) -> [Option<f64>; 3] {
    let floor = r.vs_floor().map(|k| match r.row.better {
        Better::Lower => 1.0 / k,
        Better::Higher => k,
    });
    [r.vs_cpython(), r.vs_peer(), floor]
}

/// The ratio targets of a row, oriented as [`ratios`], each with the index of its ratio there.
fn targets(r: &Results) -> Vec<(f64, usize)> {
    r.row
        .targets
        .iter()
        .filter_map(|t| match *t {
            Cpython(k) => Some((k, 0)),
            Peer(k) => Some((k, 1)),
            Floor(k) => Some((
                match r.row.better {
                    Better::Lower => 1.0 / k,
                    Better::Higher => k,
                },
                2,
            )),
            Value(_) => None,
        })
        .collect()
}

/// The colours of the three ratios (and of their targets' marks).
const COLOURS: [RGBColor; 3] = [BLUE, GREEN, MAGENTA];

/// The horizontal range: every ratio and target, widened to whole powers of ten.
fn x_range(results: &[Results]) -> (f64, f64) {
    let all = results
        .iter()
        .flat_map(|r| ratios(r).into_iter().flatten().chain(targets(r).into_iter().map(|t| t.0)));
    let (lo, hi) = all
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // One decade more on the right: the legend's room.
    (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil().max(1.0) + 1.0))
}

/// The band of the `i`th of `n` rows: the first row at the top.
fn band(i: usize, n: u32) -> u32 {
    n.saturating_sub(1).saturating_sub(i as u32)
}

/// Draws the ratios of `results` into the SVG file `path`.
pub fn write_svg(path: &str, results: &[Results], title: &str) -> Result<()> {
    let n = u32::try_from(results.len()).map_err(|_| anyhow!("too many rows"))?;
    let height = FRAME_HEIGHT + ROW_HEIGHT * n.max(1);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    draw(&root, results, title, n).map_err(|e| anyhow!("drawing {path}: {e}"))?;
    root.present().map_err(|e| anyhow!("writing {path}: {e}"))?;
    Ok(())
}

/// The drawing itself, on any backend.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    results: &[Results],
    title: &str,
    n: u32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (lo, hi) = x_range(results);
    let names: Vec<String> = results
        .iter()
        .map(|r| match r.passes() {
            Some(true) => format!("{} ✓", r.row.name),
            Some(false) => format!("{} ✗", r.row.name),
            None => r.row.name.to_owned(),
        })
        .collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(250)
        .build_cartesian_2d((lo..hi).log_scale(), (0u32..n.saturating_sub(1)).into_segmented())?;
    chart
        .configure_mesh()
        .y_labels(names.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(b) => {
                names.get(band(*b as usize, n) as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc("speed-up, oriented: right of 1× is better for mp (log scale)")
        .x_label_formatter(&|x| format!("{x}×"))
        .disable_y_mesh()
        .draw()?;

    // Parity: 1×.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
        BLACK.stroke_width(1),
    )))?;

    // The targets: a short red mark on each row's line (a fixed height in pixels, so that
    // the same target on neighbouring rows does not join into one line).
    let marks = results.iter().enumerate().flat_map(|(i, r)| {
        let at = SegmentValue::CenterOf(band(i, n));
        targets(r).into_iter().map(move |(t, which)| {
            EmptyElement::at((t, at.clone()))
                + PathElement::new(vec![(0, -MARK), (0, MARK)], COLOURS[which].stroke_width(3))
        })
    });
    chart
        .draw_series(marks)?
        .label("target (bar, in its ratio's colour)")
        .legend(|(x, y)| PathElement::new(vec![(x, y - 6), (x, y + 6)], BLACK.stroke_width(3)));

    let series = [("mp / CPython", 0), ("mp / peer", 1), ("mp / floor", 2)];
    for (label, which) in series {
        let colour = COLOURS[which];
        let points = results.iter().enumerate().filter_map(move |(i, r)| {
            let at = SegmentValue::CenterOf(band(i, n));
            ratios(r)[which].map(|v| Circle::new((v, at), 5, colour.filled()))
        });
        chart
            .draw_series(points)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::ROWS;
    use crate::table::{Sample, Side};

    fn measured(value: f64, unit: &str) -> Side {
        Side::Measured(Sample { value, unit: unit.into(), rss_kib: 1000 }, vec![value])
    }

    #[test]
    fn draws_every_row_with_its_ratios_and_targets() {
        let spawn = ROWS.iter().find(|r| r.name == "spawn_fork").copied().unwrap();
        let queue = ROWS.iter().find(|r| r.name == "queue_small").copied().unwrap();
        let results = vec![
            Results {
                row: spawn,
                mp: measured(300.0, "us/child"),
                cpython: measured(2400.0, "us/child"),
                peer: measured(1600.0, "us/child"),
                floor: measured(200.0, "us/child"),
            },
            Results {
                row: queue,
                mp: measured(10e6, "msgs/s"),
                cpython: measured(140e3, "msgs/s"),
                peer: Side::Failed,
                floor: Side::Absent("—"),
            },
        ];
        assert_eq!(ratios(&results[0]), [Some(8.0), Some(1600.0 / 300.0), Some(200.0 / 300.0)]);
        assert_eq!(targets(&results[0]), vec![(1.0 / 1.5, 2)]);
        assert_eq!(targets(&results[1]), vec![(10.0, 1)]);
        assert_eq!(x_range(&results), (0.1, 1000.0));
        assert_eq!((band(0, 2), band(1, 2)), (1, 0));
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ratios.svg");
        write_svg(path.to_str().unwrap(), &results, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("spawn_fork ✓") && svg.contains("queue_small"), "{svg}");
        assert!(svg.contains("mp / CPython") && svg.contains("target"), "{svg}");
    }
}
