//! The results of the benchmark rows and their markdown table.

use std::fmt::Write as _;

use crate::rows::Better::{Higher, Lower};
use crate::rows::Row;
use crate::rows::Target::{self, Cpython, Floor, Peer, Value};

/// One measurement: a fresh process's `RESULT` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The per-operation figure.
    pub value: f64,
    /// The figure's unit, in ASCII (`us` for µs).
    pub unit: String,
    /// The process's peak resident set, in KiB.
    pub rss_kib: u64,
}

/// What one side of a row came to over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub enum Side {
    /// The medians of the samples, and each round's value in the order of the rounds (empty
    /// when unknown: a file written before they were kept).
    Measured(Sample, Vec<f64>),
    /// The side does not exist or could not run; the text goes in the cell.
    Absent(&'static str),
    /// A run failed.
    Failed,
}

impl Side {
    /// The median value, unit and peak RSS of `samples`, or `Failed` if a run failed.
    pub fn from_runs(runs: &[Option<Sample>]) -> Side {
        let samples: Option<Vec<&Sample>> = runs.iter().map(Option::as_ref).collect();
        match samples {
            Some(samples) if !samples.is_empty() => Side::Measured(
                Sample {
                    value: median(samples.iter().map(|s| s.value).collect()),
                    unit: samples[0].unit.clone(),
                    rss_kib: median(samples.iter().map(|s| s.rss_kib as f64).collect()).round()
                        as u64,
                },
                samples.iter().map(|s| s.value).collect(),
            ),
            _ => Side::Failed,
        }
    }

    /// The median sample, if the side was measured.
    pub fn sample(&self) -> Option<&Sample> {
        match self {
            Side::Measured(sample, _) => Some(sample),
            _ => None,
        }
    }

    /// Each round's value, if the side was measured and they are known.
    pub fn rounds(&self) -> Option<&[f64]> {
        match self {
            Side::Measured(_, rounds) if !rounds.is_empty() => Some(rounds),
            _ => None,
        }
    }

    fn cell(&self) -> String {
        match self {
            Side::Measured(sample, _) => number(sample.value),
            Side::Absent(text) => (*text).to_owned(),
            Side::Failed => "error".to_owned(),
        }
    }
}

/// A row's results: mp, CPython, the Rust peer and the floor.
#[derive(Debug, Clone)]
pub struct Results {
    /// The row.
    pub row: Row,
    /// The mp side.
    pub mp: Side,
    /// The CPython side.
    pub cpython: Side,
    /// The Rust peer's side.
    pub peer: Side,
    /// The floor side.
    pub floor: Side,
}

impl Results {
    /// `ratio(mp, theirs)` as the row's figure: the median of the rounds' ratios when both
    /// sides' rounds are known (the sides of one round run back to back, so a ratio never
    /// mixes two of the machine's phases), else the ratio of the medians.
    fn ratio(&self, other: &Side, ratio: impl Fn(f64, f64) -> f64) -> Option<f64> {
        let (mp, them) = same_unit(self.mp.sample()?, other.sample()?)?;
        match (self.mp.rounds(), other.rounds()) {
            (Some(a), Some(b)) if a.len() == b.len() && a.iter().chain(b).all(|v| *v > 0.0) => {
                Some(median(a.iter().zip(b).map(|(a, b)| ratio(*a, *b)).collect()))
            }
            _ => Some(ratio(mp, them)),
        }
    }

    /// The speed-up over `other`, oriented so that above 1 means mp is better.
    fn speed_up(&self, other: &Side) -> Option<f64> {
        match self.row.better {
            Lower => self.ratio(other, |mp, them| them / mp),
            Higher => self.ratio(other, |mp, them| mp / them),
        }
    }

    /// The speed-up over CPython, oriented so that above 1 means mp is better.
    pub fn vs_cpython(&self) -> Option<f64> {
        self.speed_up(&self.cpython)
    }

    /// The speed-up over the Rust peer, oriented so that above 1 means mp is better.
    pub fn vs_peer(&self) -> Option<f64> {
        self.speed_up(&self.peer)
    }

    /// mp ÷ floor.
    pub fn vs_floor(&self) -> Option<f64> {
        self.ratio(&self.floor, |mp, floor| mp / floor)
    }

    /// Whether mp meets `target`, or `None` if a figure it needs is missing.
    pub fn meets(&self, target: Target) -> Option<bool> {
        let at_least = |have: f64, want: f64| match self.row.better {
            Lower => have <= want,
            Higher => have >= want,
        };
        match target {
            Floor(k) => Some(at_least(self.vs_floor()?, k)),
            Cpython(k) => Some(self.vs_cpython()? >= k),
            Peer(k) => Some(self.vs_peer()? >= k),
            Value(v) => Some(at_least(self.mp.sample()?.value, v)),
        }
    }

    /// Whether mp meets every target: `None` without targets or if a figure is missing.
    pub fn passes(&self) -> Option<bool> {
        if self.row.targets.is_empty() {
            return None;
        }
        let verdicts: Option<Vec<bool>> = self.row.targets.iter().map(|t| self.meets(*t)).collect();
        verdicts.map(|v| v.iter().all(|ok| *ok))
    }

    fn target_cell(&self) -> String {
        if self.row.targets.is_empty() {
            return "—".to_owned();
        }
        let (le, ge) = ("≤", "≥");
        let cmp = if self.row.better == Lower { le } else { ge };
        let unit = self.mp.sample().map(|s| display_unit(&s.unit)).unwrap_or_default();
        let goals: Vec<String> = self
            .row
            .targets
            .iter()
            .map(|t| match *t {
                Floor(k) => format!("{cmp} {}× floor", ratio_number(k)),
                Cpython(k) => format!("{ge} {}× CPython", ratio_number(k)),
                Peer(k) => format!("{ge} {}× peer", ratio_number(k)),
                Value(v) => format!("{cmp} {} {unit}", number(v)),
            })
            .collect();
        let mark = match self.passes() {
            None => "n/a",
            Some(true) => "✓ pass",
            Some(false) => "✗ miss",
        };
        format!("{} {mark}", goals.join(" and "))
    }

    /// The mp side's cell.
    pub fn mp_cell(&self) -> String {
        self.mp.cell()
    }

    /// The peer's cell: its figure and its name.
    fn peer_cell(&self) -> String {
        match (&self.peer, self.row.peer) {
            (Side::Measured(..), Some(name)) => format!("{} ({name})", self.peer.cell()),
            _ => self.peer.cell(),
        }
    }

    fn workload_cell(&self) -> String {
        let unit = [&self.mp, &self.cpython, &self.peer, &self.floor]
            .iter()
            .find_map(|s| s.sample())
            .map(|s| display_unit(&s.unit));
        let arrow = if self.row.better == Lower { "↓" } else { "↑" };
        match unit {
            Some(unit) => format!("{} ({unit} {arrow})", self.row.name),
            None => format!("{} ({arrow})", self.row.name),
        }
    }
}

/// The two values if their units agree.
fn same_unit(a: &Sample, b: &Sample) -> Option<(f64, f64)> {
    (a.unit == b.unit && a.value > 0.0 && b.value > 0.0).then_some((a.value, b.value))
}

/// The median; the mean of the middle two for an even count.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A figure with about three significant digits and thousands separators: 2,360 or 0.180.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 1000.0 {
        let digits = format!("{:.0}", a);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 { format!("-{grouped}") } else { grouped };
    }
    let decimals = if a >= 100.0 || a == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        (2 - a.log10().floor() as i32).clamp(0, 12) as usize
    };
    format!("{v:.decimals$}")
}

/// A ratio such as `2.05` or `31.4`.
fn ratio_number(r: f64) -> String {
    match r {
        _ if r >= 100.0 => format!("{r:.0}"),
        _ if r >= 10.0 => format!("{r:.1}"),
        _ => format!("{r:.2}").trim_end_matches('0').trim_end_matches('.').to_owned(),
    }
}

/// A ratio cell such as `5.73×`, or `—` if there is none.
fn ratio_cell(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{}×", ratio_number(r)),
        Some(r) => format!("{r:.2}×"),
        None => "—".to_owned(),
    }
}

/// The unit as shown: the programs print `us` for µs.
fn display_unit(unit: &str) -> String {
    match unit.strip_prefix("us") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("µs{rest}"),
        _ => unit.to_owned(),
    }
}

/// A peak resident set such as `3.1 MiB`.
fn rss_cell(side: &Side) -> String {
    match side.sample() {
        Some(s) if s.rss_kib >= 1024 => format!("{:.1} MiB", s.rss_kib as f64 / 1024.0),
        Some(s) => format!("{} KiB", s.rss_kib),
        None => "—".to_owned(),
    }
}

/// The markdown table of `results`, with the conventions said above it.
pub fn render(results: &[Results], rounds: usize) -> String {
    let header = [
        "workload",
        "mp",
        "CPython",
        "peer",
        "floor",
        "mp/CPython",
        "mp/peer",
        "mp/floor",
        "peak RSS (mp)",
        "target",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for r in results {
        rows.push(vec![
            r.workload_cell(),
            r.mp.cell(),
            r.cpython.cell(),
            r.peer_cell(),
            r.floor.cell(),
            ratio_cell(r.vs_cpython()),
            ratio_cell(r.vs_peer()),
            ratio_cell(r.vs_floor()),
            rss_cell(&r.mp),
            r.target_cell(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0))
        .collect();
    let runs = match rounds {
        1 => "One run per side".to_owned(),
        n => format!("Medians of {n} runs per side"),
    };
    let ratios = match rounds {
        1 => "",
        _ => {
            "Each ratio is the median of the rounds' ratios (a round runs the sides back to \
              back, so its ratio never mixes two of the machine's speed phases), not the ratio \
              of the medians shown."
        }
    };
    let mut out = format!(
        "{runs}, each a fresh process, alternating mp, CPython, peer, floor; `_loaded` rows \
         run every side beside one CPU hog per core.\n\
         ↓: lower is better; ↑: higher is better. mp/CPython and mp/peer are the speed-ups \
         over CPython and over the Rust peer (theirs ÷ mp on ↓ rows, mp ÷ theirs on ↑ rows), \
         so above 1× means mp is better.\n\
         mp/floor is mp ÷ floor as measured; the target says which way it must go.\n\
         {ratios}\n\n"
    );
    for (i, row) in rows.iter().enumerate() {
        out.push('|');
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(out, " {cell}{} |", " ".repeat(width - cell.chars().count()));
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for width in &widths {
                let _ = write!(out, "{}|", "-".repeat(width + 2));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{ROWS, row};

    fn s(value: f64) -> Sample {
        Sample { value, unit: "us/child".into(), rss_kib: 3200 }
    }

    fn results(row: Row, mp: f64, py: f64, floor: f64) -> Results {
        Results {
            row,
            mp: Side::Measured(s(mp), vec![mp]),
            cpython: Side::Measured(s(py), vec![py]),
            peer: Side::Absent("—"),
            floor: Side::Measured(s(floor), vec![floor]),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        let side = Side::from_runs(&[Some(s(5.0)), Some(s(1.0)), Some(s(3.0))]);
        assert_eq!(side, Side::Measured(s(3.0), vec![5.0, 1.0, 3.0]));
        assert_eq!(Side::from_runs(&[Some(s(5.0)), None]), Side::Failed);
        assert_eq!(Side::from_runs(&[]), Side::Failed);
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(2360.4), "2,360");
        assert_eq!(number(105_000.0), "105,000");
        assert_eq!(number(3_400_000.0), "3,400,000");
        assert_eq!(number(999.0), "999");
        assert_eq!(number(412.26), "412");
        assert_eq!(number(23.456), "23.5");
        assert_eq!(number(1.6), "1.60");
        assert_eq!(number(0.18), "0.180");
        assert_eq!(number(0.0123), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-1500.0), "-1,500");
        assert_eq!(ratio_cell(Some(5.734)), "5.73×");
        assert_eq!(ratio_cell(Some(31.44)), "31.4×");
        assert_eq!(ratio_cell(None), "—");
        assert_eq!(ratio_number(2.0), "2");
        assert_eq!(ratio_number(0.95), "0.95");
    }

    #[test]
    fn ratios_are_oriented_so_above_one_is_better() {
        let lower = row("t", Lower, true, &[Floor(2.0)]);
        let r = results(lower, 400.0, 2400.0, 200.0);
        assert_eq!(r.vs_cpython(), Some(6.0));
        assert_eq!(r.vs_floor(), Some(2.0));
        assert_eq!(r.meets(Floor(2.0)), Some(true));
        assert_eq!(r.meets(Floor(1.9)), Some(false));
        let higher = row("t", Higher, true, &[Floor(0.9), Cpython(10.0)]);
        let r = results(higher, 100.0, 10.0, 110.0);
        assert_eq!(r.vs_cpython(), Some(10.0));
        assert_eq!(r.meets(Floor(0.9)), Some(true));
        assert_eq!(r.meets(Cpython(10.0)), Some(true));
        assert_eq!(r.meets(Value(101.0)), Some(false));
        assert!(r.target_cell().ends_with("✓ pass"), "{}", r.target_cell());
    }

    #[test]
    fn ratios_are_medians_of_the_rounds_ratios() {
        // Session 10's pipe_pingpong: the sides of a round fell in different phases.
        let side = |values: &[f64]| {
            Side::from_runs(&values.iter().map(|v| Some(s(*v))).collect::<Vec<_>>())
        };
        let mut r = results(row("t", Lower, true, &[Floor(3.0)]), 1.0, 1.0, 1.0);
        r.mp = side(&[1.16, 1.28, 0.391]);
        r.floor = side(&[0.459, 0.105, 0.102]);
        let by_rounds = r.vs_floor().unwrap();
        assert!((by_rounds - 0.391 / 0.102).abs() < 1e-9, "{by_rounds}");
        assert_eq!(r.meets(Floor(3.0)), Some(false));
        r.cpython = side(&[24.0, 30.0, 20.0]);
        let speed_up = r.vs_cpython().unwrap();
        assert!((speed_up - 30.0 / 1.28).abs() < 1e-9, "{speed_up}");
        // Without the rounds (an older file), or with rounds that do not pair up, the ratio
        // is that of the medians.
        r.floor = Side::Measured(s(0.105), Vec::new());
        assert_eq!(r.vs_floor(), Some(1.16 / 0.105));
        r.floor = side(&[0.459, 0.105]);
        assert_eq!(r.vs_floor(), Some(1.16 / ((0.459 + 0.105) / 2.0)));
    }

    #[test]
    fn missing_sides_give_no_ratio_and_no_verdict() {
        let mut r = results(row("t", Lower, true, &[Floor(2.0)]), 400.0, 2400.0, 200.0);
        r.cpython = Side::Absent("no python3");
        r.floor = Side::Failed;
        assert_eq!(r.vs_cpython(), None);
        assert_eq!(r.target_cell(), "≤ 2× floor n/a");
        let mut other_unit = s(1.0);
        other_unit.unit = "msgs/s".into();
        r.floor = Side::Measured(other_unit, vec![1.0]);
        assert_eq!(r.vs_floor(), None);
    }

    #[test]
    fn renders_one_aligned_table() {
        let mut miss = results(ROWS[0], 500.0, 2360.0, 200.0);
        miss.cpython = Side::Absent("no python3");
        miss.peer = Side::Measured(s(1600.0), vec![1600.0]);
        let table = render(&[results(ROWS[1], 450.0, 19_000.0, 200.0), miss], 5);
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| workload "), "{table}");
        assert!(lines[1].starts_with("|---"), "{table}");
        assert!(
            lines[2].contains("spawn_forkserver (µs/child ↓)") && lines[2].contains("42.2×"),
            "{table}"
        );
        assert!(lines[2].contains("≤ 3× floor ✓ pass") && lines[2].contains("3.1 MiB"), "{table}");
        assert!(
            lines[3].contains("no python3") && lines[3].contains("≤ 1.5× floor ✗ miss"),
            "{table}"
        );
        assert!(lines[3].contains("1,600 (procspawn)") && lines[3].contains("3.20×"), "{table}");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
    }
}
