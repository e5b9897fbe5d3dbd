//! The crates' layering: a crate depends (in its manifest's `[dependencies]` and
//! `[build-dependencies]`) only on crates below it in [`ORDER`]; the test kit is a
//! dev-dependency only.

use std::fmt;

/// The layers, lowest first: a crate may depend on those before it only.
pub const ORDER: [&str; 8] =
    ["mp-process", "mp-shm", "mp-sync", "mp-queue", "mp-pool", "mp-manager", "mp-mpi", "mp"];

/// The test kit: any crate may list it under `[dev-dependencies]`, none elsewhere; it may
/// depend on any layer.
pub const TEST_KIT: &str = "mp-testkit";

/// Which table of a manifest a dependency is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[dependencies]` (also under `[target.'cfg(..)']`).
    Normal,
    /// `[build-dependencies]`.
    Build,
    /// `[dev-dependencies]`.
    Dev,
}

/// One dependency of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The package depended on (its `package = ".."` if it is renamed).
    pub package: String,
    /// The table it is in.
    pub kind: Kind,
    /// The manifest's line.
    pub line: usize,
}

/// A dependency the layering forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The crate whose manifest has it.
    pub krate: String,
    /// The manifest, as shown.
    pub manifest: String,
    /// The dependency.
    pub dependency: Dependency,
    /// Why it is forbidden.
    pub why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = match self.dependency.kind {
            Kind::Normal => "dependencies",
            Kind::Build => "build-dependencies",
            Kind::Dev => "dev-dependencies",
        };
        write!(
            f,
            "{} depends on {} ({}:{}, [{table}]): {}",
            self.krate, self.dependency.package, self.manifest, self.dependency.line, self.why
        )
    }
}

/// The table a manifest header opens: a dependency table (and the dependency a
/// `[dependencies.name]` header names), or another table.
fn table(header: &str) -> Option<(Kind, Option<&str>)> {
    let mut parts: Vec<&str> = header.split('.').map(str::trim).collect();
    if parts.first() == Some(&"target") {
        // `target.'cfg(unix)'.dependencies`: the cfg may itself hold dots.
        let at = parts.iter().rposition(|p| p.ends_with("dependencies"))?;
        parts.drain(..at);
    }
    let kind = match parts.first().copied()? {
        "dependencies" => Kind::Normal,
        "build-dependencies" => Kind::Build,
        "dev-dependencies" => Kind::Dev,
        _ => return None,
    };
    match parts.as_slice() {
        [_] => Some((kind, None)),
        [_, name] => Some((kind, Some(name.trim_matches('"')))),
        _ => None,
    }
}

/// The value of `key = "value"` inside `text`, if there is one.
fn string_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)?;
    let rest = text[at + key.len()..].trim_start().strip_prefix('=')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// The dependencies a manifest lists. A line-based reader for the shapes Cargo manifests
/// use: `name = ..`, `name.workspace = true`, inline tables with `package = ".."`, and
/// `[dependencies.name]` tables.
pub fn dependencies(manifest: &str) -> Vec<Dependency> {
    let mut found = Vec::new();
    // The open table: its kind, and the dependency a `[dependencies.name]` header names.
    let mut open: Option<(Kind, Option<usize>)> = None;
    for (index, raw) in manifest.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or_default().trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[').trim_end_matches(']');
            open = table(header).map(|(kind, name)| {
                let slot = name.map(|name| {
                    found.push(Dependency { package: name.to_owned(), kind, line: index + 1 });
                    found.len() - 1
                });
                (kind, slot)
            });
            continue;
        }
        match open {
            Some((_, Some(slot))) => {
                if let Some(package) = string_value(line, "package") {
                    found[slot].package = package.to_owned();
                }
            }
            Some((kind, None)) => {
                let Some((key, value)) = line.split_once('=') else { continue };
                let name = key.trim().split('.').next().unwrap_or_default().trim_matches('"');
                let package = string_value(value, "package").unwrap_or(name);
                found.push(Dependency { package: package.to_owned(), kind, line: index + 1 });
            }
            None => {}
        }
    }
    found
}

/// The violations of crate `krate`'s manifest (shown as `path`, text `manifest`). `members`
/// are the workspace's crates: dependencies on other packages are not the layering's business.
pub fn check(krate: &str, path: &str, manifest: &str, members: &[String]) -> Vec<Violation> {
    let layer = |name: &str| ORDER.iter().position(|l| *l == name);
    let mut violations = Vec::new();
    for dependency in dependencies(manifest) {
        let package = dependency.package.as_str();
        if dependency.kind == Kind::Dev || !members.iter().any(|m| m == package) {
            continue;
        }
        let why = if package == TEST_KIT {
            format!("{TEST_KIT} is for [dev-dependencies] only")
        } else if krate == TEST_KIT {
            continue;
        } else {
            match (layer(krate), layer(package)) {
                (Some(mine), Some(theirs)) if theirs < mine => continue,
                (Some(_), Some(_)) => {
                    format!("{package} is not below {krate} in the order {}", ORDER.join(" < "))
                }
                (None, _) => format!("{krate} has no place in the order {}", ORDER.join(" < ")),
                (_, None) => format!("{package} has no place in the order {}", ORDER.join(" < ")),
            }
        };
        violations.push(Violation {
            krate: krate.to_owned(),
            manifest: path.to_owned(),
            dependency,
            why,
        });
    }
    violations
}
