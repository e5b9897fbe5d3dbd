//! `cargo xtask bench --json FILE` and `--compare OLD.json`: a run's numbers as JSON, and the
//! change per row against an earlier run's file.
//!
//! The file holds, per row, each side's median (`null` when the side is absent or failed) and
//! its value in each round (`<side>_rounds`), its unit, which way is better, mp's peak resident
//! set, the three ratios as the table shows them (medians of the rounds' ratios), and the
//! verdict. `--from-json` reads it back to report a run again without measuring.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::rows::{Better, ROWS};
use crate::table::{self, Results, Sample, Side};

/// The version of the file's layout.
const FORMAT: u64 = 1;

/// A side's median, if it was measured.
fn value(side: &Side) -> Value {
    match side {
        Side::Measured(sample, _) => json!(sample.value),
        _ => Value::Null,
    }
}

/// A side's value in each round, if it was measured and they are known.
fn round_values(side: &Side) -> Value {
    side.rounds().map_or(Value::Null, |r| json!(r))
}

/// The JSON document of a run: `rounds` and the rows.
pub fn to_json(results: &[Results], rounds: usize) -> Value {
    let rows: Vec<Value> = results
        .iter()
        .map(|r| {
            let unit = [&r.mp, &r.cpython, &r.peer, &r.floor].iter().find_map(|s| match s {
                Side::Measured(sample, _) => Some(sample.unit.clone()),
                _ => None,
            });
            json!({
                "name": r.row.name,
                "unit": unit,
                "better": if r.row.better == Better::Lower { "lower" } else { "higher" },
                "loaded": r.row.loaded,
                "mp": value(&r.mp),
                "mp_peak_rss_kib": match &r.mp {
                    Side::Measured(sample, _) => json!(sample.rss_kib),
                    _ => Value::Null,
                },
                "cpython": value(&r.cpython),
                "peer": value(&r.peer),
                "peer_name": r.row.peer,
                "floor": value(&r.floor),
                "mp_rounds": round_values(&r.mp),
                "cpython_rounds": round_values(&r.cpython),
                "peer_rounds": round_values(&r.peer),
                "floor_rounds": round_values(&r.floor),
                "vs_cpython": r.vs_cpython(),
                "vs_peer": r.vs_peer(),
                "vs_floor": r.vs_floor(),
                "pass": r.passes(),
            })
        })
        .collect();
    json!({ "format": FORMAT, "rounds": rounds, "rows": rows })
}

/// Writes the run's JSON document to `path`.
pub fn write_json(path: &str, results: &[Results], rounds: usize) -> Result<()> {
    let text = serde_json::to_string_pretty(&to_json(results, rounds))?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {path}"))
}

/// The results and the rounds of a run's JSON document (rows this xtask no longer knows are
/// left out), for `--from-json`: the table, the picture and the comparison without measuring.
pub fn read_results(text: &str) -> Result<(Vec<Results>, usize)> {
    let doc: Value = serde_json::from_str(text).context("not JSON")?;
    if doc.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        bail!("not a `cargo xtask bench --json` file of format {FORMAT}");
    }
    let rounds = doc.get("rounds").and_then(Value::as_u64).context("no `rounds`")?;
    let rows = doc.get("rows").and_then(Value::as_array).context("no `rows` array")?;
    let mut results = Vec::new();
    for row in rows {
        let name = row.get("name").and_then(Value::as_str).context("a row without a name")?;
        let Some(known) = ROWS.iter().find(|r| r.name == name) else { continue };
        let unit = row.get("unit").and_then(Value::as_str).unwrap_or("");
        let side = |key: &str, rss_kib: u64| match row.get(key).and_then(Value::as_f64) {
            Some(value) => {
                // Files written before the rounds were kept have none: their ratios are the
                // medians'.
                let rounds = row
                    .get(format!("{key}_rounds"))
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                    .unwrap_or_default();
                Side::Measured(Sample { value, unit: unit.to_owned(), rss_kib }, rounds)
            }
            None => Side::Absent("—"),
        };
        let rss = row.get("mp_peak_rss_kib").and_then(Value::as_u64).unwrap_or(0);
        results.push(Results {
            row: *known,
            mp: side("mp", rss),
            cpython: side("cpython", 0),
            peer: side("peer", 0),
            floor: side("floor", 0),
        });
    }
    Ok((results, usize::try_from(rounds).unwrap_or(usize::MAX)))
}

/// One row of an earlier run, as far as the comparison needs it.
struct Before {
    mp: Option<f64>,
    unit: Option<String>,
    vs_cpython: Option<f64>,
    vs_floor: Option<f64>,
}

/// The rows of an earlier run's file, by name.
fn read_before(text: &str) -> Result<Vec<(String, Before)>> {
    let doc: Value = serde_json::from_str(text).context("not JSON")?;
    if doc.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        bail!("not a `cargo xtask bench --json` file of format {FORMAT}");
    }
    let rows = doc.get("rows").and_then(Value::as_array).context("no `rows` array")?;
    rows.iter()
        .map(|row| {
            let name = row.get("name").and_then(Value::as_str).context("a row without a name")?;
            let number = |key: &str| row.get(key).and_then(Value::as_f64);
            Ok((
                name.to_owned(),
                Before {
                    mp: number("mp"),
                    unit: row.get("unit").and_then(Value::as_str).map(str::to_owned),
                    vs_cpython: number("vs_cpython"),
                    vs_floor: number("vs_floor"),
                },
            ))
        })
        .collect()
}

/// mp's change from `before` to `now`, as a percentage where a positive figure is better.
fn change(better: Better, before: f64, now: f64) -> Option<f64> {
    (before > 0.0 && now > 0.0).then(|| match better {
        Better::Higher => (now / before - 1.0) * 100.0,
        Better::Lower => (before / now - 1.0) * 100.0,
    })
}

/// An optional figure or ratio, or `—`.
fn cell(v: Option<f64>, ratio: bool) -> String {
    match v {
        Some(v) if ratio => format!("{}×", table::number(v)),
        Some(v) => table::number(v),
        None => "—".to_owned(),
    }
}

/// The markdown table of the change per row from the run in `old_text` to `results`.
pub fn compare(old_text: &str, results: &[Results]) -> Result<String> {
    let before = read_before(old_text)?;
    let mut out = String::from(
        "Change per row from the earlier run (mp's figure; + is better whichever way the row \
         goes; ratios as in the table).\n\n\
         | workload | mp before | mp now | change | mp/CPython before → now | mp/floor before → now |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in results {
        let Some((_, old)) = before.iter().find(|(name, _)| name == r.row.name) else {
            let _ = writeln!(out, "| {} | (new row) | {} | — | — | — |", r.row.name, r.mp_cell());
            continue;
        };
        let now = match &r.mp {
            Side::Measured(sample, _) if old.unit.as_deref().is_none_or(|u| u == sample.unit) => {
                Some(sample.value)
            }
            _ => None,
        };
        let delta = match (old.mp, now) {
            (Some(a), Some(b)) => change(r.row.better, a, b).map(|c| format!("{c:+.1}%")),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} → {} | {} → {} |",
            r.row.name,
            cell(old.mp, false),
            cell(now, false),
            delta.unwrap_or_else(|| "—".to_owned()),
            cell(old.vs_cpython, true),
            cell(r.vs_cpython(), true),
            cell(old.vs_floor, true),
            cell(r.vs_floor(), true),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(value: f64, unit: &str) -> Side {
        Side::Measured(Sample { value, unit: unit.into(), rss_kib: 1000 }, vec![value])
    }

    fn results() -> Vec<Results> {
        let spawn = ROWS.iter().find(|r| r.name == "spawn_fork").copied().unwrap();
        let queue = ROWS.iter().find(|r| r.name == "queue_small").copied().unwrap();
        vec![
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
                cpython: Side::Absent("no python3"),
                peer: Side::Failed,
                floor: Side::Absent("—"),
            },
        ]
    }

    #[test]
    fn the_json_holds_every_side_and_ratio() {
        let doc = to_json(&results(), 5);
        assert_eq!(doc["format"], 1);
        assert_eq!(doc["rounds"], 5);
        let spawn = &doc["rows"][0];
        assert_eq!(spawn["name"], "spawn_fork");
        assert_eq!(spawn["unit"], "us/child");
        assert_eq!(spawn["better"], "lower");
        assert_eq!(spawn["vs_cpython"], 8.0);
        assert_eq!(spawn["vs_floor"], 1.5);
        assert_eq!(spawn["pass"], true);
        let queue = &doc["rows"][1];
        assert_eq!(queue["cpython"], Value::Null);
        assert_eq!(queue["peer"], Value::Null);
        assert_eq!(queue["peer_name"], "ipc-channel");
    }

    #[test]
    fn compare_reads_its_own_json_and_orients_the_change() {
        let old = serde_json::to_string(&to_json(&results(), 5)).unwrap();
        let mut now = results();
        now[0].mp = measured(240.0, "us/child");
        now[1].mp = measured(5e6, "msgs/s");
        let table = compare(&old, &now).unwrap();
        let spawn = table.lines().find(|l| l.starts_with("| spawn_fork")).unwrap();
        assert!(spawn.contains("| 300 | 240 | +25.0% |"), "{table}");
        let queue = table.lines().find(|l| l.starts_with("| queue_small")).unwrap();
        assert!(queue.contains("| -50.0% |"), "{table}");
        let (back, rounds) = read_results(&old).unwrap();
        assert_eq!(rounds, 5);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].vs_cpython(), Some(8.0));
        assert_eq!(back[1].cpython, Side::Absent("—"));
        assert_eq!(back[0].mp.rounds(), Some(&[300.0][..]));
        // The rounds go out and come back, and the ratios read back are theirs.
        let mut two = results();
        two[0].mp = Side::Measured(
            Sample { value: 300.0, unit: "us/child".into(), rss_kib: 1000 },
            vec![300.0, 250.0, 400.0],
        );
        two[0].floor = Side::Measured(
            Sample { value: 200.0, unit: "us/child".into(), rss_kib: 1000 },
            vec![100.0, 200.0, 250.0],
        );
        let doc = to_json(&two, 3);
        assert_eq!(doc["rows"][0]["floor_rounds"], json!([100.0, 200.0, 250.0]));
        assert_eq!(doc["rows"][0]["vs_floor"], 1.6);
        let (back, _) = read_results(&doc.to_string()).unwrap();
        assert_eq!(back[0].vs_floor(), Some(1.6));
        // A file without rounds gives the ratio of the medians.
        let mut old_doc = doc.clone();
        old_doc["rows"][0].as_object_mut().unwrap().remove("floor_rounds");
        let (back, _) = read_results(&old_doc.to_string()).unwrap();
        assert_eq!(back[0].vs_floor(), Some(1.5));
        assert!(compare("{}", &now).is_err());
        assert!(compare("not json", &now).is_err());
    }
}
