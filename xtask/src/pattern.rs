//! Expected-output files for the examples: the directives and the line patterns.
//!
//! The format is documented in `examples/expected/README.md`. This module is pure: it parses an
//! expected file and compares a program's output with it, and does no I/O of its own.

use std::fmt::Write as _;

/// The start methods every example runs under unless its expected file restricts them.
pub const METHODS: [&str; 3] = ["fork", "spawn", "forkserver"];

/// A parsed expected-output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Whether the output lines may come in any order.
    pub unordered: bool,
    /// The exit status the example must end with.
    pub exit_code: i32,
    /// The start methods the example runs under.
    pub methods: Vec<String>,
    /// One pattern per expected output line.
    pub patterns: Vec<Pattern>,
}

/// One piece of a line pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text that must appear as it is.
    Literal(String),
    /// `{pid}`: one or more ASCII digits.
    Digits,
    /// `{int}`: one or more ASCII digits after an optional '-'.
    Int,
    /// `{any}`: any text, possibly empty.
    Any,
}

/// The pattern for one output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    pieces: Vec<Piece>,
}

impl Pattern {
    /// Parses one pattern line; trailing whitespace is not part of the pattern.
    pub fn parse(line: &str) -> Pattern {
        let text = line.trim_end().to_owned();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let placeholder =
                [("{pid}", Piece::Digits), ("{int}", Piece::Int), ("{any}", Piece::Any)]
                    .into_iter()
                    .find(|(token, _)| rest.starts_with(token));
            if let Some((token, piece)) = placeholder {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                rest = &rest[token.len()..];
            } else {
                let c = rest.chars().next().expect("the rest is not empty");
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Pattern { text, pieces }
    }

    /// The pattern as it was written, without trailing whitespace.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `line` matches this pattern; trailing whitespace of `line` is ignored.
    pub fn matches(&self, line: &str) -> bool {
        match_pieces(&self.pieces, line.trim_end())
    }

    /// Whether the pattern has no placeholder, so that it matches one text only.
    fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }
}

/// Matches `s` against `pieces` by backtracking; the lines are short, so this is cheap.
fn match_pieces(pieces: &[Piece], s: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return s.is_empty();
    };
    match first {
        Piece::Literal(text) => {
            s.strip_prefix(text.as_str()).is_some_and(|r| match_pieces(rest, r))
        }
        Piece::Digits => match_digits(rest, s, 0),
        Piece::Int => match_digits(rest, s, usize::from(s.starts_with('-'))),
        Piece::Any => {
            (0..=s.len()).filter(|&i| s.is_char_boundary(i)).any(|i| match_pieces(rest, &s[i..]))
        }
    }
}

/// Matches a run of one or more digits starting at byte `skip` of `s`, then `rest`.
fn match_digits(rest: &[Piece], s: &str, skip: usize) -> bool {
    let digits = s.as_bytes()[skip..].iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=digits).rev().any(|n| match_pieces(rest, &s[skip + n..]))
}

/// Parses an expected-output file: the directives at the top, then one pattern per line.
pub fn parse_expected(text: &str) -> Result<Expected, String> {
    let mut expected = Expected {
        unordered: false,
        exit_code: 0,
        methods: METHODS.iter().map(|m| (*m).to_owned()).collect(),
        patterns: Vec::new(),
    };
    let mut lines = text.lines().peekable();
    let mut number = 0;
    while let Some(directive) = lines.peek().and_then(|l| l.strip_prefix("#!")) {
        number += 1;
        let words: Vec<&str> = directive.split_whitespace().collect();
        match words.as_slice() {
            ["unordered"] => expected.unordered = true,
            ["exit", code] => {
                expected.exit_code = code.parse().map_err(|_| {
                    format!("line {number}: `#! exit` needs an integer, got `{code}`")
                })?;
            }
            ["methods", methods @ ..] if !methods.is_empty() => {
                if let Some(bad) = methods.iter().find(|m| !METHODS.contains(m)) {
                    return Err(format!(
                        "line {number}: unknown start method `{bad}` (known: {})",
                        METHODS.join(" ")
                    ));
                }
                expected.methods = methods.iter().map(|m| (*m).to_owned()).collect();
            }
            _ => {
                return Err(format!(
                    "line {number}: unknown directive `#!{directive}` (known: `#! unordered`, `#! exit <code>`, \
                     `#! methods <method>...`)"
                ));
            }
        }
        lines.next();
    }
    expected.patterns = lines.map(Pattern::parse).collect();
    Ok(expected)
}

/// Compares `output` with the patterns; on a mismatch, says what differs.
pub fn compare(expected: &Expected, output: &str) -> Result<(), String> {
    let lines: Vec<&str> = output.lines().collect();
    if expected.unordered {
        compare_unordered(&expected.patterns, &lines)
    } else {
        compare_ordered(&expected.patterns, &lines)
    }
}

/// The most differing lines a mismatch report names.
const REPORT_LIMIT: usize = 10;

fn compare_ordered(patterns: &[Pattern], lines: &[&str]) -> Result<(), String> {
    let mut report = String::new();
    if patterns.len() != lines.len() {
        let _ = writeln!(report, "expected {} lines, got {}", patterns.len(), lines.len());
    }
    let differing = patterns.iter().zip(lines).enumerate().filter(|(_, (p, l))| !p.matches(l));
    for (i, (pattern, line)) in differing.take(REPORT_LIMIT) {
        let _ = writeln!(
            report,
            "line {}: expected `{}`, got `{}`",
            i + 1,
            pattern.text(),
            line.trim_end()
        );
    }
    if report.is_empty() { Ok(()) } else { Err(report) }
}

fn compare_unordered(patterns: &[Pattern], lines: &[&str]) -> Result<(), String> {
    // Literal patterns are tried first so that placeholders are left for the lines that need them;
    // the augmenting paths below make the matching maximum whatever the order.
    let mut order: Vec<usize> = (0..patterns.len()).collect();
    order.sort_by_key(|&p| !patterns[p].is_literal());
    let candidates: Vec<Vec<usize>> = lines
        .iter()
        .map(|line| order.iter().copied().filter(|&p| patterns[p].matches(line)).collect())
        .collect();
    let mut line_of_pattern: Vec<Option<usize>> = vec![None; patterns.len()];
    for line in 0..lines.len() {
        let mut visited = vec![false; patterns.len()];
        augment(line, &candidates, &mut line_of_pattern, &mut visited);
    }
    let mut matched_lines = vec![false; lines.len()];
    for line in line_of_pattern.iter().flatten() {
        matched_lines[*line] = true;
    }
    let mut report = String::new();
    if patterns.len() != lines.len() {
        let _ = writeln!(report, "expected {} lines, got {}", patterns.len(), lines.len());
    }
    let unmatched_lines = lines.iter().zip(&matched_lines).filter(|(_, m)| !**m).map(|(l, _)| l);
    for line in unmatched_lines.take(REPORT_LIMIT) {
        let _ = writeln!(report, "unexpected line `{}`", line.trim_end());
    }
    let unmatched_patterns =
        patterns.iter().zip(&line_of_pattern).filter(|(_, l)| l.is_none()).map(|(p, _)| p);
    for pattern in unmatched_patterns.take(REPORT_LIMIT) {
        let _ = writeln!(report, "no line for pattern `{}`", pattern.text());
    }
    if report.is_empty() { Ok(()) } else { Err(report) }
}

/// Kuhn's augmenting path from output line `line`: true if it found the line a pattern.
fn augment(
    line: usize,
    candidates: &[Vec<usize>],
    line_of_pattern: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    for &pattern in &candidates[line] {
        if visited[pattern] {
            continue;
        }
        visited[pattern] = true;
        let free = match line_of_pattern[pattern] {
            None => true,
            Some(other) => augment(other, candidates, line_of_pattern, visited),
        };
        if free {
            line_of_pattern[pattern] = Some(line);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, line: &str) -> bool {
        Pattern::parse(pattern).matches(line)
    }

    #[test]
    fn literal_lines_match_exactly() {
        assert!(m("hello world", "hello world"));
        assert!(!m("hello world", "hello  world"));
        assert!(!m("hello", "hello world"));
        assert!(m("", ""));
        assert!(!m("", "x"));
        assert!(m("{brace} {}", "{brace} {}"));
    }

    #[test]
    fn trailing_whitespace_is_ignored_on_both_sides() {
        assert!(m("a b  \t", "a b"));
        assert!(m("a b", "a b   \r"));
        assert!(!m("a b", " a b"));
    }

    #[test]
    fn pid_matches_one_or_more_digits() {
        assert!(m("child {pid} done", "child 12345 done"));
        assert!(m("child {pid} done", "child 0 done"));
        assert!(!m("child {pid} done", "child  done"));
        assert!(!m("child {pid} done", "child -3 done"));
        assert!(!m("child {pid} done", "child 12a done"));
        assert!(m("{pid}{pid}", "12"));
        assert!(!m("{pid}{pid}", "1"));
    }

    #[test]
    fn int_takes_an_optional_minus() {
        assert!(m("exit {int}", "exit 0"));
        assert!(m("exit {int}", "exit -15"));
        assert!(!m("exit {int}", "exit -"));
        assert!(!m("exit {int}", "exit +1"));
        assert!(m("{int}-{int}", "3-4"));
        assert!(m("{int}-{int}", "-3--4"));
    }

    #[test]
    fn any_matches_any_text_including_none() {
        assert!(m("start {any} end", "start  end"));
        assert!(m("start {any} end", "start the middle end"));
        assert!(m("{any}", ""));
        assert!(m("{any}x{any}", "axbxc"));
        assert!(m("é{any}ü", "éaü"));
        assert!(!m("{any}x", "abc"));
    }

    #[test]
    fn directives_are_read_at_the_top_only() {
        let e = parse_expected("#! unordered\n#! exit 3\n#! methods fork spawn\na\n#! unordered\n")
            .unwrap();
        assert!(e.unordered);
        assert_eq!(e.exit_code, 3);
        assert_eq!(e.methods, ["fork", "spawn"]);
        assert_eq!(e.patterns.iter().map(Pattern::text).collect::<Vec<_>>(), ["a", "#! unordered"]);
        let d = parse_expected("x\n").unwrap();
        assert!(!d.unordered);
        assert_eq!(d.exit_code, 0);
        assert_eq!(d.methods, METHODS);
        assert!(parse_expected("").unwrap().patterns.is_empty());
    }

    #[test]
    fn bad_directives_are_errors() {
        assert!(parse_expected("#! sorted\n").is_err());
        assert!(parse_expected("#! exit\n").is_err());
        assert!(parse_expected("#! exit one\n").is_err());
        assert!(parse_expected("#! methods\n").is_err());
        assert!(parse_expected("#! methods fork vfork\n").is_err());
    }

    #[test]
    fn ordered_output_must_match_line_by_line() {
        let e = parse_expected("a {pid}\nb\n").unwrap();
        assert!(compare(&e, "a 1\nb\n").is_ok());
        assert!(compare(&e, "a 1\nb").is_ok());
        assert!(compare(&e, "b\na 1\n").is_err());
        assert!(compare(&e, "a 1\n").is_err());
        assert!(compare(&e, "a 1\nb\nc\n").is_err());
        let err = compare(&e, "a x\nb\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn unordered_output_is_a_multiset() {
        let e = parse_expected("#! unordered\nx\ny\nx\n").unwrap();
        assert!(compare(&e, "y\nx\nx\n").is_ok());
        assert!(compare(&e, "x\ny\ny\n").is_err());
        assert!(compare(&e, "x\ny\n").is_err());
    }

    #[test]
    fn unordered_matching_uses_augmenting_paths() {
        // A greedy matcher that gives "a" to `{any}` leaves "b" without a pattern.
        let e = parse_expected("#! unordered\n{any}\na\n").unwrap();
        assert!(compare(&e, "a\nb\n").is_ok());
        let e = parse_expected("#! unordered\nw {any}\nw {int}\nw 1\n").unwrap();
        assert!(compare(&e, "w 1\nw 2\nw x\n").is_ok());
        assert!(compare(&e, "w x\nw y\nw 1\n").is_err());
        let err = compare(&e, "w x\nw y\nw 1\n").unwrap_err();
        assert!(
            err.contains("unexpected line `w ") && err.contains("no line for pattern `w {int}`"),
            "{err}"
        );
    }
}
