//! The number of CPUs this process may actually use: affinity mask and cgroup quota.
//!
//! Python's `os.cpu_count()` reports every CPU in the machine, ignoring both the
//! affinity mask and any container CPU quota; `os.process_cpu_count()` (Python 3.13)
//! honours the affinity mask but still not the quota. [`cpu_count`] honours both,
//! which is what a worker pool wants for its default size: in a container limited to
//! 1.5 CPUs on a 64-core host it answers 2, not 64.

use std::path::{Path, PathBuf};

/// The mount point of the cgroup v2 hierarchy.
const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

/// Where the v2 hierarchy is mounted on hybrid systems.
const CGROUP2_HYBRID_ROOT: &str = "/sys/fs/cgroup/unified";

/// The usual mount points of the cgroup v1 `cpu` controller.
const CGROUP1_CPU_ROOTS: [&str; 3] =
    ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"];

/// Returns the number of CPUs this process may use; always at least 1.
///
/// This is the smaller of the number of CPUs in the process's affinity mask
/// (`sched_getaffinity`) and its cgroup CPU quota rounded up to whole CPUs. The
/// quota is read from `cpu.max` of the process's cgroup and every ancestor (cgroup
/// v2), or from `cpu.cfs_quota_us` / `cpu.cfs_period_us` (cgroup v1), and the
/// tightest limit wins. If the affinity mask cannot be read, the standard library's
/// `available_parallelism` is used instead, and 1 if that fails too.
///
/// Unlike Python's `os.cpu_count()`, which counts every CPU of the machine, this
/// behaves like `os.process_cpu_count()` and additionally honours the CPU quota.
pub fn cpu_count() -> usize {
    let base = affinity_count().unwrap_or_else(|| {
        std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(1)
    });
    let limited = match cgroup_cpu_limit() {
        Some(limit) => base.min(limit),
        None => base,
    };
    limited.max(1)
}

/// Counts the CPUs in this process's affinity mask, if it can be read.
fn affinity_count() -> Option<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    let count = usize::try_from(set.count()).ok()?;
    (count > 0).then_some(count)
}

/// The cgroup paths of this process, as listed in `/proc/self/cgroup`.
#[derive(Debug, Default, PartialEq, Eq)]
struct CgroupPaths {
    /// The path in the unified (v2) hierarchy, from the `0::` line.
    v2: Option<String>,
    /// The path in the v1 hierarchy that holds the `cpu` controller.
    v1_cpu: Option<String>,
}

/// Parses the contents of `/proc/self/cgroup`.
///
/// Each line reads `hierarchy-id:controller-list:path`; the v2 line has id 0 and an
/// empty controller list.
fn parse_proc_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            paths.v2.get_or_insert_with(|| path.to_owned());
        } else if controllers.split(',').any(|c| c == "cpu") {
            paths.v1_cpu.get_or_insert_with(|| path.to_owned());
        }
    }
    paths
}

/// Parses a cgroup v2 `cpu.max` file: `QUOTA PERIOD`, where `QUOTA` may be `max`.
///
/// Returns `None` for unparsable text, `Some(None)` for no limit, and
/// `Some(Some((quota, period)))` for a limit in microseconds per period.
fn parse_cpu_max(text: &str) -> Option<Option<(u64, u64)>> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period = match words.next() {
        Some(p) => Some(p.parse::<u64>().ok().filter(|&p| p > 0)?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    if quota == "max" {
        return Some(None);
    }
    let quota = quota.parse::<u64>().ok()?;
    Some(Some((quota, period?)))
}

/// Parses the cgroup v1 pair `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
///
/// A negative quota (normally -1) means no limit. The return value is as for
/// [`parse_cpu_max`].
fn parse_cfs(quota: &str, period: &str) -> Option<Option<(u64, u64)>> {
    let quota = quota.trim().parse::<i64>().ok()?;
    if quota < 0 {
        return Some(None);
    }
    let period = period.trim().parse::<u64>().ok().filter(|&p| p > 0)?;
    Some(Some((u64::try_from(quota).ok()?, period)))
}

/// Converts a quota per period into whole CPUs, rounding up; never less than 1.
fn quota_to_cpus((quota, period): (u64, u64)) -> usize {
    let cpus = quota.div_ceil(period.max(1)).max(1);
    usize::try_from(cpus).unwrap_or(usize::MAX)
}

/// Lists the directory of `cgroup_path` under `root` and each of its ancestors up to
/// and including `root`, deepest first.
///
/// Empty, `.` and `..` components are skipped so that the walk never leaves `root`.
fn cgroup_dirs(root: &Path, cgroup_path: &str) -> Vec<PathBuf> {
    let mut dir = root.to_path_buf();
    let mut dirs = vec![dir.clone()];
    for part in cgroup_path.split('/').filter(|p| !p.is_empty() && *p != "." && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

/// Keeps the tighter of two optional CPU limits.
fn tighter(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The tightest cgroup v2 limit on the path and its ancestors under `root`.
fn v2_limit(root: &Path, cgroup_path: &str) -> Option<usize> {
    cgroup_dirs(root, cgroup_path)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cpu.max")).ok())
        .filter_map(|text| parse_cpu_max(&text).flatten())
        .map(quota_to_cpus)
        .min()
}

/// The tightest cgroup v1 limit on the path and its ancestors under `root`.
fn v1_limit(root: &Path, cgroup_path: &str) -> Option<usize> {
    cgroup_dirs(root, cgroup_path)
        .iter()
        .filter_map(|dir| {
            let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
            let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
            parse_cfs(&quota, &period).flatten()
        })
        .map(quota_to_cpus)
        .min()
}

/// Reads this process's cgroup CPU quota as whole CPUs, or `None` if it has none or
/// it cannot be determined.
fn cgroup_cpu_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let paths = parse_proc_cgroup(&text);
    let mut limit = None;
    if let Some(path) = &paths.v2 {
        for root in [CGROUP2_ROOT, CGROUP2_HYBRID_ROOT] {
            limit = tighter(limit, v2_limit(Path::new(root), path));
        }
    }
    if let Some(path) = &paths.v1_cpu {
        for root in CGROUP1_CPU_ROOTS {
            limit = tighter(limit, v1_limit(Path::new(root), path));
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_samples() {
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("max"), Some(None));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(Some((150_000, 100_000))));
        assert_eq!(parse_cpu_max("150000 100000").flatten().map(quota_to_cpus), Some(2));
        assert_eq!(parse_cpu_max("50000 100000").flatten().map(quota_to_cpus), Some(1));
        assert_eq!(parse_cpu_max("200000 100000").flatten().map(quota_to_cpus), Some(2));
        assert_eq!(parse_cpu_max("1 100000").flatten().map(quota_to_cpus), Some(1));
        for garbage in ["", "\n", "abc", "150000", "150000 0", "max 0", "1 2 3", "-5 100", "max x"]
        {
            assert_eq!(parse_cpu_max(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn cfs_samples() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Some(None));
        assert_eq!(parse_cfs("250000\n", "100000\n"), Some(Some((250_000, 100_000))));
        assert_eq!(parse_cfs("250000", "100000").flatten().map(quota_to_cpus), Some(3));
        assert_eq!(parse_cfs("x", "100000"), None);
        assert_eq!(parse_cfs("1000", "0"), None);
        assert_eq!(parse_cfs("1000", ""), None);
    }

    #[test]
    fn quota_rounding_is_never_zero() {
        assert_eq!(quota_to_cpus((0, 100_000)), 1);
        assert_eq!(quota_to_cpus((100_000, 100_000)), 1);
        assert_eq!(quota_to_cpus((100_001, 100_000)), 2);
        assert_eq!(quota_to_cpus((u64::MAX, 1)), usize::try_from(u64::MAX).unwrap_or(usize::MAX));
    }

    #[test]
    fn proc_cgroup_v2() {
        let paths = parse_proc_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(
            paths,
            CgroupPaths {
                v2: Some("/user.slice/user-1000.slice/session-3.scope".into()),
                v1_cpu: None,
            }
        );
    }

    #[test]
    fn proc_cgroup_v1_and_hybrid() {
        let text = "12:pids:/docker/abc\n\
                    4:cpu,cpuacct:/docker/abc\n\
                    3:cpuset:/docker/abc\n\
                    1:name=systemd:/docker/abc\n\
                    0::/\n";
        let paths = parse_proc_cgroup(text);
        assert_eq!(paths.v1_cpu.as_deref(), Some("/docker/abc"));
        assert_eq!(paths.v2.as_deref(), Some("/"));

        let paths = parse_proc_cgroup("2:cpuacct:/a\n1:cpu:/b\n");
        assert_eq!(paths.v1_cpu.as_deref(), Some("/b"));
        assert_eq!(paths.v2, None);
    }

    #[test]
    fn proc_cgroup_garbage() {
        assert_eq!(parse_proc_cgroup(""), CgroupPaths::default());
        assert_eq!(parse_proc_cgroup("nonsense\n::\n1:cpu\n"), CgroupPaths::default());
        // A path containing ':' is kept whole.
        let paths = parse_proc_cgroup("0::/a:b\n");
        assert_eq!(paths.v2.as_deref(), Some("/a:b"));
    }

    #[test]
    fn ancestor_dirs() {
        let dirs = cgroup_dirs(Path::new("/sys/fs/cgroup"), "/a/b");
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/a/b"),
                PathBuf::from("/sys/fs/cgroup/a"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        assert_eq!(cgroup_dirs(Path::new("/r"), "/"), vec![PathBuf::from("/r")]);
        assert_eq!(
            cgroup_dirs(Path::new("/r"), "/../x/./"),
            vec![PathBuf::from("/r/x"), PathBuf::from("/r")]
        );
    }

    #[test]
    fn limits_from_a_fake_hierarchy() {
        let root = std::env::temp_dir().join(format!("mp-cpu-test-{}", std::process::id()));
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(root.join("a/cpu.max"), "300000 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(v2_limit(&root, "/a/b"), Some(3));
        std::fs::write(leaf.join("cpu.max"), "120000 100000\n").unwrap();
        assert_eq!(v2_limit(&root, "/a/b"), Some(2));
        assert_eq!(v2_limit(&root, "/missing"), None);

        std::fs::write(root.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        std::fs::write(root.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(v1_limit(&root, "/"), None);
        std::fs::write(leaf.join("cpu.cfs_quota_us"), "50000\n").unwrap();
        std::fs::write(leaf.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(v1_limit(&root, "/a/b"), Some(1));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tighter_limits() {
        assert_eq!(tighter(None, None), None);
        assert_eq!(tighter(Some(3), None), Some(3));
        assert_eq!(tighter(None, Some(2)), Some(2));
        assert_eq!(tighter(Some(3), Some(2)), Some(2));
    }

    #[test]
    fn cpu_count_is_sane() {
        let n = cpu_count();
        assert!(n >= 1);
        if let Some(affinity) = affinity_count() {
            assert!(n <= affinity, "{n} > affinity {affinity}");
        }
        if let Some(limit) = cgroup_cpu_limit() {
            assert!(n <= limit);
        }
    }
}
