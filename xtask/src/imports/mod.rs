//! `cargo xtask lint-imports`: the import graph of every crate's modules, and the crates'
//! layering.
//!
//! A node is a source file of a crate (`foo.rs` and `foo/mod.rs` are module `foo`; a file below
//! `foo/` is a module of its own). An edge from file A to file B is a path of the crate in A
//! that names B or an item of B: in `use` items (nested groups, `self`, globs, renames,
//! `pub use`), in code (`crate::b::f()`, types, patterns, macro arguments), relative to A
//! (`super::`, `self::`, a child module's name). A path to an item the target module only
//! re-exports (`crate::Error`, with `pub use error::Error` in `lib.rs`) is followed to the module
//! it comes from. The crate root is not a node: it declares modules and re-exports, so every
//! module would otherwise be in a cycle with it; a path that ends there (an item `lib.rs`
//! defines itself) counts for nothing. Code compiled only for tests (`#[cfg(test)]` items and
//! modules, and files declared `#[cfg(test)] mod name;`) may import anything and counts for
//! nothing either. Every strongly connected component of more than one file is an import
//! cycle, reported with its members and, for each, one edge to another member (file:line).
//!
//! The layering is checked in the manifests: see [`layers`].

mod layers;
mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::test::Status;
use layers::Violation;
use parse::{FileFacts, ModPath};

/// How many re-exports a path is followed through before it is taken where it stands.
const MAX_HOPS: usize = 16;

/// One source file of a crate.
pub struct SourceFile {
    /// Its path, as reports show it (from the workspace root).
    pub shown: String,
    /// Its path below the crate's `src/`.
    pub relative: PathBuf,
    /// Its text.
    pub text: String,
}

/// A file's module, from its path below `src/`: `None` for a file that is no module of the
/// crate's library (`bin/`, `main.rs` beside a `lib.rs`).
fn module_of(relative: &Path, has_lib: bool) -> Option<ModPath> {
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    match (parts.is_empty(), stem) {
        (true, "lib") => Some(Vec::new()),
        (true, "main") => (!has_lib).then(Vec::new),
        (_, "mod") => Some(parts),
        _ => {
            parts.push(stem.to_owned());
            Some(parts)
        }
    }
}

/// A module's name as reports show it.
fn module_name(module: &[String]) -> String {
    if module.is_empty() { "crate".to_owned() } else { module.join("::") }
}

/// One file, read.
struct Node {
    shown: String,
    facts: FileFacts,
}

/// An edge's first occurrence: where, and the path as written (absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// `file:line`.
    pub place: String,
    /// The path, from the crate root.
    pub path: String,
}

/// An import cycle: its members (sorted) and, for each, one edge to another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The crate.
    pub krate: String,
    /// The members, each with the member it imports and where.
    pub members: Vec<(String, String, Example)>,
}

/// A crate's modules and the edges between them.
pub struct Graph {
    /// The edges, from module to module, with their first occurrence.
    pub edges: BTreeMap<ModPath, BTreeMap<ModPath, Example>>,
    /// Every module that is a node (not the root, not a test-only file).
    pub nodes: BTreeSet<ModPath>,
}

/// Builds a crate's module graph from its source files.
pub fn graph(files: &[SourceFile]) -> Result<Graph> {
    let has_lib = files.iter().any(|f| f.relative == Path::new("lib.rs"));
    let located: Vec<(ModPath, &SourceFile)> =
        files.iter().filter_map(|f| Some((module_of(&f.relative, has_lib)?, f))).collect();
    let modules: BTreeSet<ModPath> = located.iter().map(|(m, _)| m.clone()).collect();
    let mut nodes = BTreeMap::new();
    for (module, file) in located {
        let facts = parse::parse_file(&file.text, &module, &modules)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.shown))?;
        nodes.insert(module, Node { shown: file.shown.clone(), facts });
    }
    let tests_only = test_only_modules(&nodes);
    let resolver = Resolver { nodes: &nodes };
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, Example>> = BTreeMap::new();
    for (module, node) in &nodes {
        if module.is_empty() || tests_only.contains(module) {
            continue;
        }
        let targets = edges.entry(module.clone()).or_default();
        for reference in &node.facts.references {
            let target = resolver.resolve(&reference.path, 0);
            if target.is_empty() || target == *module || tests_only.contains(&target) {
                continue;
            }
            let example = Example {
                place: format!("{}:{}", node.shown, reference.line),
                path: format!("crate::{}", reference.path.join("::")),
            };
            targets.entry(target).or_insert(example);
        }
    }
    let nodes = nodes.into_keys().filter(|m| !m.is_empty() && !tests_only.contains(m)).collect();
    Ok(Graph { edges, nodes })
}

/// The modules compiled only for tests: files that say so, files declared
/// `#[cfg(test)] mod name;`, and every module below them.
fn test_only_modules(nodes: &BTreeMap<ModPath, Node>) -> BTreeSet<ModPath> {
    let mut roots: Vec<ModPath> = Vec::new();
    for (module, node) in nodes {
        if node.facts.test_only {
            roots.push(module.clone());
        }
        for child in &node.facts.test_children {
            let mut path = module.clone();
            path.push(child.clone());
            roots.push(path);
        }
    }
    nodes.keys().filter(|m| roots.iter().any(|r| m.starts_with(r))).cloned().collect()
}

/// Resolves paths to the modules whose items they name.
struct Resolver<'a> {
    nodes: &'a BTreeMap<ModPath, Node>,
}

impl Resolver<'_> {
    /// The module of the crate `path` names, or an item of: the longest prefix that is a file
    /// module, unless the next segment is a name that module imports (then where it imports
    /// it from).
    fn resolve(&self, path: &[String], hops: usize) -> ModPath {
        let known = (0..=path.len()).rev().find(|&k| self.nodes.contains_key(&path[..k]));
        let Some(k) = known else { return Vec::new() };
        let module = path[..k].to_vec();
        let Some(name) = path.get(k) else { return module };
        match self.imported(&module, name, hops) {
            Some(mut source) => {
                source.extend_from_slice(&path[k + 1..]);
                self.resolve(&source, hops + 1)
            }
            None => module,
        }
    }

    /// Where `module`'s name `name` comes from, if the module imports it (by name or through
    /// a glob) rather than defines it.
    fn imported(&self, module: &ModPath, name: &str, hops: usize) -> Option<ModPath> {
        if hops >= MAX_HOPS {
            return None;
        }
        let facts = &self.nodes.get(module)?.facts;
        if facts.defines.contains(name) {
            return None;
        }
        if let Some(source) = facts.imports.get(name) {
            return Some(source.clone());
        }
        facts.globs.iter().find_map(|glob| {
            let source = self.resolve(glob, hops + 1);
            let there = &self.nodes.get(&source)?.facts;
            let has = there.defines.contains(name) || there.imports.contains_key(name);
            has.then(|| glob.iter().cloned().chain([name.to_owned()]).collect())
        })
    }
}

/// The strongly connected components of more than one node (Tarjan's algorithm), each sorted,
/// in order of their first member.
pub fn cycles(graph: &Graph) -> Vec<Vec<ModPath>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g ModPath) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
                if !self.graph.nodes.contains(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in &graph.nodes {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.found.sort();
    tarjan.found
}

/// The cycles of one crate, each member with one edge to another member: the first, by
/// module, of those it has.
pub fn crate_cycles(krate: &str, files: &[SourceFile]) -> Result<Vec<Cycle>> {
    let graph = graph(files)?;
    Ok(cycles(&graph)
        .into_iter()
        .map(|component| {
            let members = component
                .iter()
                .filter_map(|m| {
                    let out = graph.edges.get(m)?;
                    let (to, example) = out.iter().find(|(to, _)| component.contains(to))?;
                    Some((module_name(m), module_name(to), example.clone()))
                })
                .collect();
            Cycle { krate: krate.to_owned(), members }
        })
        .collect())
}

/// What the lint found in the workspace.
#[derive(Debug, Default)]
pub struct Report {
    /// The crates looked at.
    pub crates: Vec<String>,
    /// Every import cycle.
    pub cycles: Vec<Cycle>,
    /// Every forbidden dependency between crates.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Whether there is nothing to report.
    pub fn is_clean(&self) -> bool {
        self.cycles.is_empty() && self.violations.is_empty()
    }

    /// The report, as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (n, cycle) in self.cycles.iter().enumerate() {
            let names: Vec<&str> = cycle.members.iter().map(|(m, _, _)| m.as_str()).collect();
            let _ = writeln!(
                out,
                "cycle {} in {} ({} modules): {}",
                n + 1,
                cycle.krate,
                names.len(),
                names.join(", ")
            );
            let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
            for (from, to, example) in &cycle.members {
                let _ = writeln!(
                    out,
                    "    {from:width$} -> {to:width$}  at {} ({})",
                    example.place, example.path
                );
            }
        }
        for violation in &self.violations {
            let _ = writeln!(out, "layering: {violation}");
        }
        let _ = writeln!(
            out,
            "lint-imports: {} crates, {} import cycle{}, {} layering violation{}",
            self.crates.len(),
            self.cycles.len(),
            if self.cycles.len() == 1 { "" } else { "s" },
            self.violations.len(),
            if self.violations.len() == 1 { "" } else { "s" },
        );
        out
    }
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The `name` of a manifest's `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Lints the workspace at `root`: every crate under `crates/` and the root crate.
pub fn check(root: &Path) -> Result<Report> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .context("reading crates/")?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs.push(root.to_path_buf());
    let mut crates = Vec::new();
    for dir in dirs {
        let manifest_path = dir.join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let Some(name) = package_name(&manifest) else {
            bail!("{} names no package", manifest_path.display())
        };
        crates.push((name, dir, manifest_path, manifest));
    }
    let members: Vec<String> = crates.iter().map(|(name, ..)| name.clone()).collect();
    let shown = |path: &Path| path.strip_prefix(root).unwrap_or(path).display().to_string();
    let mut report = Report { crates: members.clone(), ..Report::default() };
    for (name, dir, manifest_path, manifest) in &crates {
        report.violations.extend(layers::check(name, &shown(manifest_path), manifest, &members));
        let src = dir.join("src");
        let mut paths = Vec::new();
        rust_files(&src, &mut paths)?;
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let relative = path.strip_prefix(&src).unwrap_or(&path).to_path_buf();
            files.push(SourceFile { shown: shown(&path), relative, text });
        }
        report.cycles.extend(crate_cycles(name, &files)?);
    }
    Ok(report)
}

/// The lint as a leg of `cargo xtask test`: prints the report, and fails if it is not clean.
pub fn leg() -> Status {
    match check(&crate::root()) {
        Ok(report) => {
            print!("{}", report.render());
            if report.is_clean() {
                Status::Ok
            } else {
                Status::Failed(format!(
                    "{} import cycles, {} layering violations",
                    report.cycles.len(),
                    report.violations.len()
                ))
            }
        }
        Err(error) => Status::Failed(format!("{error:#}")),
    }
}

/// `cargo xtask lint-imports`: prints the report; true if it is clean.
pub fn run(args: &[String]) -> Result<bool> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask lint-imports` takes no options, got `{arg}`");
    }
    Ok(leg() == Status::Ok)
}

#[cfg(test)]
mod tests;
