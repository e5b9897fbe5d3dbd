//! A real `python3` peer: finding an interpreter of a given version and running a script.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `(major, minor)` version of the interpreter `exe`, if it runs.
fn version(exe: &PathBuf) -> Option<(u32, u32)> {
    let out = Command::new(exe)
        .args(["-c", "import sys; print(sys.version_info[0], sys.version_info[1])"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A Python 3 interpreter whose minor version is at least `min_minor` and at most
/// `max_minor`: `python3` on the `PATH` if it fits, else one of pyenv's installed versions
/// (`$PYENV_ROOT/versions/*/bin/python3`, `~/.pyenv` by default). `None` if none fits.
pub fn python(min_minor: u32, max_minor: u32) -> Option<PathBuf> {
    let fits = |exe: &PathBuf| {
        version(exe)
            .is_some_and(|(major, minor)| major == 3 && (min_minor..=max_minor).contains(&minor))
    };
    let path = PathBuf::from("python3");
    if fits(&path) {
        return Some(path);
    }
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let mut installed: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join("python3")))
        .collect();
    installed.sort();
    installed.into_iter().find(fits)
}

/// Starts `exe -c script args...` with its stdout piped (and stdin closed), so the test
/// reads what the script prints.
///
/// # Panics
/// If the interpreter cannot be started.
pub fn run_script(exe: &PathBuf, script: &str, args: &[&str]) -> Child {
    Command::new(exe)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python")
}
