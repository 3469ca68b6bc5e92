//! The mounts a container without a mount namespace of its own leaves in the runtime's
//! mount table: its root bound on itself with everything mounted beneath it. `create`
//! notes which mount was at the root before; `delete` (and a failed `create`) detaches
//! whatever is stacked above that one, so nothing of the container stays mounted.

use std::io;
use std::path::{Path, PathBuf};

/// How many mounts `detach_above` removes at most: the launcher stacks one (the root
/// bound on itself); anything beyond a few is somebody else's.
const MAX_DETACH: usize = 4;

/// The id of the topmost mount at `path` in this process's mount table, if `path`
/// is a mount point.
pub fn top_mount(path: &Path) -> io::Result<Option<u64>> {
    let path = canonical(path)?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(topmost(&table, &path))
}

/// Detaches (lazily, with everything beneath) the mounts stacked at `root` above
/// mount `below` (`None`: every mount there).
pub fn detach_above(root: &Path, below: Option<u64>) -> io::Result<()> {
    for _ in 0..MAX_DETACH {
        let top = top_mount(root)?;
        if top.is_none() || top == below {
            return Ok(());
        }
        nix::mount::umount2(root, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("detach {}: {e}", root.display())))?;
    }
    Err(io::Error::other(format!(
        "{} still has mounts stacked on it after {MAX_DETACH} detaches",
        root.display()
    )))
}

fn canonical(path: &Path) -> io::Result<PathBuf> {
    std::fs::canonicalize(path)
        .map_err(|e| io::Error::new(e.kind(), format!("resolve {}: {e}", path.display())))
}

/// Of the mounts of `table` (mountinfo's format) at `path`, the one no other mount
/// there is stacked on.
fn topmost(table: &str, path: &Path) -> Option<u64> {
    let at: Vec<(u64, u64)> = table
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let id = f.next()?.parse().ok()?;
            let parent = f.next()?.parse().ok()?;
            let point = f.nth(2)?;
            (Path::new(&unescape(point)) == path).then_some((id, parent))
        })
        .collect();
    at.iter()
        .find(|(id, _)| !at.iter().any(|(_, parent)| parent == id))
        .map(|(id, _)| *id)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / / rw shared:1 - ext4 /dev/vda1 rw
30 22 0:21 /b/root /b/root rw shared:1 - ext4 /dev/vda1 rw
31 30 0:22 / /b/root/proc rw - proc proc rw
32 30 0:21 /b/root /b/root rw shared:1 - ext4 /dev/vda1 rw
40 22 0:21 /a\\040b /a\\040b rw - ext4 /dev/vda1 rw
";

    #[test]
    fn the_topmost_mount_is_the_one_nothing_is_stacked_on() {
        assert_eq!(topmost(TABLE, Path::new("/b/root")), Some(32));
        assert_eq!(topmost(TABLE, Path::new("/b/root/proc")), Some(31));
        assert_eq!(topmost(TABLE, Path::new("/a b")), Some(40));
        assert_eq!(topmost(TABLE, Path::new("/b")), None);
    }
}
