//! Pausing a container (an OCI `pause` and `resume`): every process of its cgroup
//! frozen by the kernel's freezer, v2's `cgroup.freeze` or v1's freezer hierarchy.

use super::cgroup::{write_file, Cgroup, Layout};
use super::error::{Step, StepError, StepResult};
use std::fs;
use std::io;
use std::path::PathBuf;

impl Cgroup {
    /// Where the container is frozen: v2's own directory (`cgroup.freeze`), or its
    /// directory in v1's freezer hierarchy (made on first use: containers get none
    /// unless paused).
    fn freezer_dir(&self) -> Option<PathBuf> {
        match &self.layout {
            Layout::V2 { .. } => self.dirs.first().cloned(),
            Layout::V1 { controllers } => controllers.get("freezer").map(|m| m.join(&self.rel)),
        }
    }

    /// Freezes (`true`) or thaws every process of the container (an OCI `pause` and
    /// `resume`), and waits until the kernel says it is done.
    pub fn freeze(&self, frozen: bool) -> StepResult<()> {
        let Some(dir) = self.freezer_dir() else {
            return Err(StepError::msg(
                "freeze",
                "no freezer controller on this host",
            ));
        };
        match self.layout {
            Layout::V2 { .. } => {
                write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
                    .step(|| format!("write {}/cgroup.freeze", dir.display()))?;
            }
            Layout::V1 { .. } => {
                if frozen {
                    fs::create_dir_all(&dir).step(|| format!("make {}", dir.display()))?;
                    // Processes come and go while they are moved: one that ended is
                    // skipped, one forked meanwhile is caught by the next pass.
                    for _ in 0..10 {
                        let inside =
                            fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                        let outside: Vec<i32> = self
                            .pids()
                            .into_iter()
                            .filter(|p| !inside.lines().any(|l| l.trim() == p.to_string()))
                            .collect();
                        if outside.is_empty() {
                            break;
                        }
                        for p in outside {
                            match write_file(&dir.join("cgroup.procs"), &p.to_string()) {
                                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                                r => r.step(|| format!("move pid {p} into {}", dir.display()))?,
                            }
                        }
                    }
                }
                let state = if frozen { "FROZEN" } else { "THAWED" };
                write_file(&dir.join("freezer.state"), state)
                    .step(|| format!("write {state} to {}/freezer.state", dir.display()))?;
            }
        }
        for _ in 0..500 {
            if self.frozen() == frozen {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(StepError::msg(
            "freeze",
            format!("{} did not settle within 5 s", dir.display()),
        ))
    }

    /// Whether the container is frozen.
    pub fn frozen(&self) -> bool {
        let Some(dir) = self.freezer_dir() else {
            return false;
        };
        match self.layout {
            Layout::V2 { .. } => fs::read_to_string(dir.join("cgroup.events"))
                .map(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false),
            Layout::V1 { .. } => fs::read_to_string(dir.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
        }
    }

    /// Removes the v1 freezer directory a `pause` made (nothing on v2: it is the
    /// container's own directory, removed with the rest).
    pub fn remove_freezer(&self) -> StepResult<()> {
        if let (Layout::V1 { .. }, Some(dir)) = (&self.layout, self.freezer_dir()) {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StepError::os(format!("remove {}", dir.display()), e)),
                Ok(()) => self.remove_empty_parents(&dir),
            }
        }
        Ok(())
    }
}
