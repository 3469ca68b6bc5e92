//! Callbacks used by Storage API

use std::io;

use anyerror::AnyError;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::async_runtime::AsyncOneshotSendExt;
use crate::core::notify::Notify;
use crate::raft_state::io_state::log_io_id::LogIOId;
use crate::type_config::alias::OneshotSenderOf;
use crate::LogId;
use crate::RaftTypeConfig;
use crate::StorageIOError;
use crate::Vote;

/// A oneshot callback for completion of log io operation.
pub struct LogFlushed<C>
where C: RaftTypeConfig
{
    log_io_id: LogIOId<C::NodeId>,
    reply: FlushReply<C>,
}

/// haconiwa's patch: whom a flush is reported to.
enum FlushReply<C>
where C: RaftTypeConfig
{
    /// The core, waiting for it before its next step (a follower's append).
    Awaited(OneshotSenderOf<C, Result<LogIOId<C::NodeId>, io::Error>>),
    /// The core's message queue: a leader's own append, which the core does not wait
    /// for; its copy counts towards the quorum once this arrives.
    InBackground {
        tx_notify: mpsc::UnboundedSender<Notify<C>>,
        vote: Vote<C::NodeId>,
        log_id: LogId<C::NodeId>,
    },
}

impl<C> LogFlushed<C>
where C: RaftTypeConfig
{
    pub(crate) fn new(
        log_io_id: LogIOId<C::NodeId>,
        tx: OneshotSenderOf<C, Result<LogIOId<C::NodeId>, io::Error>>,
    ) -> Self {
        Self {
            log_io_id,
            reply: FlushReply::Awaited(tx),
        }
    }

    /// haconiwa's patch: the callback of a leader's own append, which the core does not
    /// wait for: its completion goes to the core as `Notify::LocalLogFlushed`.
    pub(crate) fn in_background(
        log_io_id: LogIOId<C::NodeId>,
        tx_notify: mpsc::UnboundedSender<Notify<C>>,
        vote: Vote<C::NodeId>,
        log_id: LogId<C::NodeId>,
    ) -> Self {
        Self {
            log_io_id,
            reply: FlushReply::InBackground {
                tx_notify,
                vote,
                log_id,
            },
        }
    }

    /// haconiwa's patch: whether the core waits for this flush before its next step (a
    /// follower's append, which it answers only once stored). A store may then flush
    /// in the call rather than hand the flush to a thread of its own.
    pub fn is_awaited(&self) -> bool {
        matches!(self.reply, FlushReply::Awaited(_))
    }

    /// Report log io completion event.
    ///
    /// It will be called when the log is successfully appended to the storage or an error occurs.
    pub fn log_io_completed(self, result: Result<(), io::Error>) {
        if let Err(e) = &result {
            tracing::error!("LogFlush error: {}, while flushing upto {}", e, self.log_io_id);
        }
        match self.reply {
            FlushReply::Awaited(tx) => {
                let res = match result {
                    Err(e) => tx.send(Err(e)),
                    Ok(()) => tx.send(Ok(self.log_io_id)),
                };
                if let Err(e) = res {
                    tracing::error!("failed to send log io completion event: {:?}", e);
                }
            }
            FlushReply::InBackground {
                tx_notify,
                vote,
                log_id,
            } => {
                let result = result.map_err(|e| StorageIOError::write_logs(AnyError::error(e)).into());
                // The core may have quit: then nobody needs to hear it.
                let _ = tx_notify.send(Notify::LocalLogFlushed { vote, log_id, result });
            }
        }
    }
}

/// A oneshot callback for completion of applying logs to state machine.
pub struct LogApplied<C>
where C: RaftTypeConfig
{
    last_log_id: LogId<C::NodeId>,
    tx: oneshot::Sender<Result<(LogId<C::NodeId>, Vec<C::R>), StorageIOError<C::NodeId>>>,
}

impl<C> LogApplied<C>
where C: RaftTypeConfig
{
    #[allow(dead_code)]
    pub(crate) fn new(
        last_log_id: LogId<C::NodeId>,
        tx: oneshot::Sender<Result<(LogId<C::NodeId>, Vec<C::R>), StorageIOError<C::NodeId>>>,
    ) -> Self {
        Self { last_log_id, tx }
    }

    /// Report apply io completion event.
    ///
    /// It will be called when the log is successfully applied to the state machine or an error
    /// occurs.
    pub fn completed(self, result: Result<Vec<C::R>, StorageIOError<C::NodeId>>) {
        let res = match result {
            Ok(x) => {
                tracing::debug!("LogApplied upto {}", self.last_log_id);
                let resp = (self.last_log_id.clone(), x);
                self.tx.send(Ok(resp))
            }
            Err(e) => {
                tracing::error!("LogApplied error: {}, while applying upto {}", e, self.last_log_id);
                self.tx.send(Err(e))
            }
        };

        if let Err(_e) = res {
            tracing::error!("failed to send apply complete event, last_log_id: {}", self.last_log_id);
        }
    }
}
