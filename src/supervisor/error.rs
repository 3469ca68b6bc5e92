//! What a supervisor operation can fail with, typed: callers decide on the variant (a
//! rule backs off on `Placement`), never on a message's text. `tonic::Status` is made
//! from it only at the endpoint edge.

use crate::decide::placement::PlacementError;
use tonic::Status;

/// Failure of a cluster operation.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No node can take the container.
    #[error("cannot place the container: {0}")]
    Placement(#[from] PlacementError),
    /// The state refused the command (it was valid but does not apply now).
    #[error("{0}")]
    Refused(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// This member cannot act now (no leader, leadership changing, membership busy);
    /// retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Raft itself failed the call.
    #[error("raft: {0}")]
    Raft(String),
    /// Something that should not happen (a committed entry not found after commit).
    #[error("{0}")]
    Internal(String),
    /// The leader answered a forwarded call with this status.
    #[error("{}", .0.message())]
    Remote(#[from] Status),
}

/// Shorthand.
pub type OpResult<T> = Result<T, OpError>;

impl From<OpError> for Status {
    fn from(e: OpError) -> Status {
        match e {
            OpError::Placement(p @ PlacementError::NoSuchNode(_)) => {
                Status::invalid_argument(p.to_string())
            }
            OpError::Placement(_) | OpError::Refused(_) => {
                Status::failed_precondition(e.to_string())
            }
            OpError::NotFound(m) => Status::not_found(m),
            OpError::Invalid(m) => Status::invalid_argument(m),
            OpError::Unavailable(m) => Status::unavailable(m),
            OpError::Raft(_) => Status::unavailable(e.to_string()),
            OpError::Internal(m) => Status::internal(m),
            OpError::Remote(s) => s,
        }
    }
}
