//! What the legs of `mp-mpi` need beyond cargo: libclang for rsmpi's bindings, and a run of
//! the example `mpi_pool` as a singleton and under `mpirun`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::test::Status;
use crate::{cargo, proc, target_dir};

/// What the MPI legs need and, if something is missing, what to install.
pub fn missing() -> Option<String> {
    let runs = |prog: &str| {
        Command::new(prog)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = "install them with `apt-get install libopenmpi-dev openmpi-bin libclang1-14 \
                   libclang-common-14-dev` (Debian; .ci/run does)";
    if !runs("mpirun") || !runs("mpicc") {
        return Some(format!("no MPI library (`mpirun`, `mpicc`): {install}"));
    }
    if !have_libclang() {
        return Some(format!("no libclang (bindgen needs it to build rsmpi): {install}"));
    }
    None
}

/// Whether libclang, and the headers it needs for `mpi.h`, can be found where bindgen (through
/// clang-sys) looks: `LIBCLANG_PATH`, or an LLVM installed in `/usr/lib/llvm-*`.
fn have_libclang() -> bool {
    let has_lib = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libclang") && name.contains(".so")
            })
        })
    };
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH") {
        return has_lib(Path::new(&dir));
    }
    let Ok(llvms) = std::fs::read_dir("/usr/lib") else { return false };
    llvms.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("llvm-")).any(|e| {
        let lib = e.path().join("lib");
        // bindgen fails on `mpi.h` without clang's own headers (`stddef.h`).
        let headers = std::fs::read_dir(lib.join("clang")).is_ok_and(|versions| {
            versions.flatten().any(|v| v.path().join("include/stddef.h").is_file())
        });
        has_lib(&lib) && headers
    })
}

/// What every run of the example prints.
const EXPECTED: [&str; 4] = [
    "workers: 2",
    "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
    "sum of 100,000 squares: 333328333350000",
    "hosts: 1",
];

/// Builds the example `mpi_pool` and runs it as a singleton (spawned workers), under
/// `mpirun -n 1` (spawned workers) and under `mpirun -n 3` (a static world).
pub fn example() -> Status {
    let built = cargo()
        .args(["build", "-p", "mp-mpi", "--example", "mpi_pool"])
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        return Status::Failed("the example mpi_pool did not build".into());
    }
    let exe = target_dir().join("debug/examples/mpi_pool");
    let mpirun = |n: &str| {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-n", n]).arg(&exe);
        c
    };
    let runs = [
        ("a singleton", Command::new(&exe)),
        ("mpirun -n 1", mpirun("1")),
        ("mpirun -n 3", mpirun("3")),
    ];
    for (how, mut cmd) in runs {
        let out = match proc::run_captured(&mut cmd, Duration::from_secs(120)) {
            Ok(out) => out,
            Err(e) => return Status::Failed(format!("mpi_pool as {how}: {e:#}")),
        };
        let text = out.stdout_text();
        let lines: Vec<&str> = text.lines().collect();
        println!("mpi_pool as {how}: {}", proc::describe(out.status));
        if out.timed_out || !out.status.success() || lines != EXPECTED {
            println!("{}{}", crate::indented(&text), crate::indented(&out.stderr_text()));
            return Status::Failed(format!(
                "mpi_pool as {how}: {}{}",
                proc::describe(out.status),
                if out.timed_out { ", timed out" } else { "" }
            ));
        }
    }
    Status::Ok
}
