//! Launch errors: which container, which step, which OS error.

use std::fmt;
use std::io;

/// A failed step inside the launcher (before it is tied to a container name). It
/// travels from the child to the parent as JSON over the error pipe.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StepError {
    /// What was being done, e.g. "pivot_root into /var/lib/x".
    pub step: String,
    /// The OS error, when there is one.
    pub errno: Option<i32>,
    /// Extra explanation when no OS error tells it.
    pub detail: Option<String>,
}

impl StepError {
    /// An OS error during `step`.
    pub fn os(step: impl Into<String>, err: io::Error) -> Self {
        StepError {
            step: step.into(),
            errno: err.raw_os_error(),
            detail: if err.raw_os_error().is_none() {
                Some(err.to_string())
            } else {
                None
            },
        }
    }

    /// The last OS error (`errno`) during `step`.
    pub fn last(step: impl Into<String>) -> Self {
        StepError::os(step, io::Error::last_os_error())
    }

    /// A failure explained in words.
    pub fn msg(step: impl Into<String>, detail: impl Into<String>) -> Self {
        StepError {
            step: step.into(),
            errno: None,
            detail: Some(detail.into()),
        }
    }

    /// Encodes the error for the child→parent error pipe.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"step":"start","errno":null,"detail":null}"#.to_vec())
    }

    /// Decodes what [`StepError::encode`] wrote (anything else is reported as such).
    pub fn decode(bytes: &[u8]) -> StepError {
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            StepError::msg(
                "start",
                format!(
                    "unreadable error report from the child ({e}): {}",
                    String::from_utf8_lossy(bytes)
                ),
            )
        })
    }

    /// The cause in words: the OS error and/or the explanation.
    fn reason(&self) -> String {
        match (self.errno, &self.detail) {
            (Some(e), Some(d)) => format!("{} ({d})", io::Error::from_raw_os_error(e)),
            (Some(e), None) => io::Error::from_raw_os_error(e).to_string(),
            (None, Some(d)) => d.clone(),
            (None, None) => "failed".into(),
        }
    }

    /// Ties the error to a container.
    pub fn in_container(self, name: &str) -> LaunchError {
        LaunchError {
            container: name.to_string(),
            reason: self.reason(),
            step: self.step,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.reason())
    }
}

/// Why a container did not start: one line naming the container, the step and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("container {container}: {step}: {reason}")]
pub struct LaunchError {
    /// Container name.
    pub container: String,
    /// The step that failed.
    pub step: String,
    /// The OS error or explanation.
    pub reason: String,
}

/// Shorthand for launcher results.
pub type StepResult<T> = Result<T, StepError>;

/// Adds the step name to an `io::Result`.
pub trait Step<T> {
    /// Names the step that produced this result.
    fn step(self, step: impl FnOnce() -> String) -> StepResult<T>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, step: impl FnOnce() -> String) -> StepResult<T> {
        self.map_err(|e| StepError::os(step(), e))
    }
}

impl<T> Step<T> for nix::Result<T> {
    fn step(self, step: impl FnOnce() -> String) -> StepResult<T> {
        self.map_err(|e| StepError::os(step(), io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_errors_cross_the_pipe_intact() {
        let e = StepError {
            step: "mount /proc: with \x1f and \n inside".into(),
            errno: Some(libc::EPERM),
            detail: Some("why".into()),
        };
        let back = StepError::decode(&e.encode());
        assert_eq!(
            (back.step, back.errno, back.detail),
            (e.step, e.errno, e.detail)
        );
        let junk = StepError::decode(b"not json");
        assert!(junk.detail.unwrap().contains("unreadable error report"));
    }
}
