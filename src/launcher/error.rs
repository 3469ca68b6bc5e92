//! Launch errors: which container, which step, which OS error.

use std::fmt;
use std::io;

/// A failed step inside the launcher (before it is tied to a container name).
#[derive(Debug)]
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
        format!(
            "{}\x1f{}\x1f{}",
            self.step,
            self.errno.unwrap_or(0),
            self.detail.as_deref().unwrap_or("")
        )
        .into_bytes()
    }

    /// Decodes what [`StepError::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> StepError {
        let text = String::from_utf8_lossy(bytes);
        let mut it = text.splitn(3, '\x1f');
        let step = it.next().unwrap_or("start").to_string();
        let errno = it
            .next()
            .and_then(|e| e.parse::<i32>().ok())
            .filter(|e| *e != 0);
        let detail = it.next().filter(|d| !d.is_empty()).map(str::to_string);
        StepError {
            step,
            errno,
            detail,
        }
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
