//! The paths of /proc and /sys a container gets hidden or read-only when its definition
//! does not list its own (`c.masked_paths`, `c.readonly_paths`, an OCI config's
//! `linux.maskedPaths` and `linux.readonlyPaths`): runc's and Docker's lists.

/// Hidden: a file behind a bind of /dev/null, a directory behind an empty read-only
/// tmpfs.
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/acpi",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Made read-only.
pub const READONLY_PATHS: [&str; 6] = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's two lists: its own, or the defaults.
pub fn lists(masks: &Option<(Vec<String>, Vec<String>)>) -> (Vec<String>, Vec<String>) {
    match masks {
        Some(m) => m.clone(),
        None => (
            MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        ),
    }
}
