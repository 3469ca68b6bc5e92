//! The agent's picture of what runs on this node: the local containers by name, as their
//! state files last said. Reads race (a full scan may start before a launch ends and
//! finish after it), so every entry remembers when the read that made it began, and an
//! older read never overwrites a newer one. A pass reads the picture in place (no copy
//! of thousands of entries at every change).

use crate::decide::reconcile::{ByName, Local, LocalStatus};
use crate::runtime::state::{State as LocalState, Status as RuntimeStatus};
use std::collections::HashMap;

/// What runs here, by container name (= container id).
#[derive(Default)]
pub struct Picture {
    clock: u64,
    entries: ByName<Local>,
    /// When the read behind each entry began.
    read_at: ByName<u64>,
}

impl Picture {
    /// The time of a read that starts now.
    pub fn begin(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// What a read begun `at` found for `name` (`None`: no such container).
    pub fn put(&mut self, name: String, found: Option<Local>, at: u64) {
        if self.read_at.get(&name).is_some_and(|t| *t > at) {
            return;
        }
        match found {
            Some(l) => {
                self.entries.insert(name.clone(), l);
                self.read_at.insert(name, at);
            }
            None => {
                self.entries.remove(&name);
                self.read_at.remove(&name);
            }
        }
    }

    /// What a read of everything begun `at` found: entries it did not see are gone,
    /// unless something newer put them there.
    pub fn replace_all(&mut self, mut seen: HashMap<String, Option<Local>>, at: u64) {
        for name in self.entries.keys() {
            if !seen.contains_key(name) {
                seen.insert(name.clone(), None);
            }
        }
        for (name, found) in seen {
            self.put(name, found, at);
        }
    }

    /// The picture as the decision table takes it.
    pub fn local(&self) -> &ByName<Local> {
        &self.entries
    }
}

/// What the decision table needs of a local record.
pub fn local_view(l: &LocalState) -> Local {
    let status = match l.status {
        RuntimeStatus::Creating => LocalStatus::Creating,
        RuntimeStatus::Running => LocalStatus::Running,
        RuntimeStatus::Exited => LocalStatus::Exited,
    };
    Local {
        exit_code: l.exit_code,
        oom_killed: l.oom_killed,
        reason: l.reason.clone(),
        lost: l.lost,
        ..Local::new(status, l.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(pid: i32) -> Local {
        Local::new(LocalStatus::Running, pid)
    }

    #[test]
    fn an_older_read_never_overwrites_a_newer_one() {
        let mut p = Picture::default();
        let (scan, launch) = (p.begin(), p.begin());
        p.put("a".into(), Some(running(2)), launch);
        // The scan began before the launch's read and found the container not yet there.
        p.replace_all(HashMap::new(), scan);
        assert_eq!(p.local().get("a"), Some(&running(2)));
        // A newer scan that does not find it removes it; an older put cannot bring it back.
        let (old, newer) = (p.begin(), p.begin());
        p.replace_all(HashMap::from([("b".to_string(), Some(running(3)))]), newer);
        assert_eq!(p.local().get("a"), None);
        p.put("b".into(), None, old);
        assert_eq!(p.local().get("b"), Some(&running(3)));
        p.put("b".into(), None, p.clock + 1);
        assert!(p.local().is_empty());
    }
}
