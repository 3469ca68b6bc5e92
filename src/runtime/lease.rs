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

/// Width of a lease record: the boot-clock milliseconds as 20 digits and a newline (any
/// u64 fits), so that a renewal overwrites the last one byte for byte.
const RECORD_LEN: usize = 21;

/// Records that the lease runs until boot-clock `until_ms`.
///
/// In place: the record is overwritten in the existing file (same length, no truncation),
/// so a renewal allocates no inode. Renewing through a new file and a rename did, several
/// times a second, and on an ext4 state directory where thousands of containers had come
/// and gone each allocation searched past the recently deleted inodes: a quarter of an
/// idle supervisor's CPU beside 2,000 containers. A reader that could catch a renewal
/// half-written reads until two reads agree ([`valid_until`]). A missing file, or one of
/// another length (an older version's), is written whole through a rename first.
pub fn renew(path: &Path, until_ms: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let record = format!("{until_ms:020}\n");
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) if f.metadata()?.len() == RECORD_LEN as u64 => f.write_all_at(record.as_bytes(), 0),
        Ok(_) => super::state::write_atomic(path, record.as_bytes()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            super::state::write_atomic(path, record.as_bytes())
        }
        Err(e) => Err(e),
    }
}

/// Until when the lease runs; `None` when there is no readable lease (which counts as
/// expired).
///
/// The record is read until two reads in a row agree (at most a few times; a lease that
/// never reads the same twice counts as expired): a read that overlapped a renewal's
/// write could otherwise mix the old digits with the new ones, and a mix can read later
/// than either.
pub fn valid_until(path: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut last = [0u8; 64];
    let mut last_len = f.read_at(&mut last, 0).ok()?;
    for _ in 0..4 {
        let mut now = [0u8; 64];
        let len = f.read_at(&mut now, 0).ok()?;
        if now[..len] == last[..last_len] {
            return std::str::from_utf8(&now[..len]).ok()?.trim().parse().ok();
        }
        (last, last_len) = (now, len);
    }
    None
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

    #[test]
    fn a_renewal_overwrites_the_record_in_place_and_replaces_another_length_whole() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("hc-lease-place-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lease");
        // An older version's record (no padding) is read, then replaced whole.
        std::fs::write(&path, "1234\n").unwrap();
        assert_eq!(valid_until(&path), Some(1234));
        renew(&path, 99).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{:020}\n", 99)
        );
        let inode = std::fs::metadata(&path).unwrap().ino();
        // Then renewed in place: the same file, the new time, nothing left of the old.
        renew(&path, 123_456_789).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(valid_until(&path), Some(123_456_789));
        renew(&path, 7).unwrap();
        assert_eq!(valid_until(&path), Some(7));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_LEN as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
