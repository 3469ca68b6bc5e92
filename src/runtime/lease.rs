//! A node's lease on its containers: "this host may run its cluster containers until
//! boot-clock time T". The supervisor renews it each time the leader acknowledges a
//! heartbeat; each container's monitor reads it and stops its container once it has run
//! out, on its own, whether or not the supervisor still runs (dead, frozen, cut off,
//! store broken). The leader replaces a silent node's containers only after the lease
//! plus a margin, so the two never overlap.
//!
//! The clock is CLOCK_BOOTTIME: monotonic (no wall-clock jumps) and counting suspended
//! time (a host that slept has used its lease up, as the rest of the cluster saw it).

use std::io;
use std::path::Path;

/// Milliseconds on the boot clock now.
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000,
        // The boot clock always exists on Linux; a zero here reads as "expired".
        Err(_) => 0,
    }
}

/// Records that the lease runs until boot-clock `until_ms` (atomically: a monitor never
/// reads half a lease).
pub fn renew(path: &Path, until_ms: u64) -> io::Result<()> {
    super::state::write_atomic(path, format!("{until_ms}\n").as_bytes())
}

/// Until when the lease runs; `None` when there is no readable lease (which counts as
/// expired).
pub fn valid_until(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How long the lease still runs, `None` when it has run out.
pub fn remaining_ms(path: &Path) -> Option<u64> {
    let until = valid_until(path)?;
    let now = now_ms();
    (until > now).then(|| until - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_until_its_time_and_a_missing_one_is_expired() {
        let dir = std::env::temp_dir().join(format!("hc-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lease");
        assert_eq!(remaining_ms(&path), None);
        renew(&path, now_ms() + 10_000).unwrap();
        let left = remaining_ms(&path).unwrap();
        assert!((9_000..=10_000).contains(&left), "{left}");
        renew(&path, now_ms().saturating_sub(1)).unwrap();
        assert_eq!(remaining_ms(&path), None);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(remaining_ms(&path), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
