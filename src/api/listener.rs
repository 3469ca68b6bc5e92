//! The port's door: accepts TCP connections, completes the TLS handshake (when TLS is on)
//! within a deadline, and hands tonic connections that are bounded:
//!
//! - at most `max_connections` at once; a newcomer at the cap closes the oldest
//!   connection that never made an authenticated call, and is closed at once itself
//!   when every connection has (excess refused quickly, never an authenticated caller
//!   starved by idle strangers);
//! - a connection that makes no authenticated call within `auth_timeout` is closed
//!   (the token check marks a connection authenticated: [`ConnInfo::authenticate`]).

use crate::api::tls::ServerTls;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;

/// The bounds of the door.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once (counting those in their TLS handshake).
    pub max_connections: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a first authenticated call.
    pub auth_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
        }
    }
}

/// One connection as the door and the token check share it.
#[derive(Debug, Default)]
struct ConnState {
    authenticated: AtomicBool,
    closed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }
}

/// What tonic keeps of a connection (in each request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer.
    pub remote: Option<SocketAddr>,
    /// Whether it came in over TLS.
    pub tls: bool,
    state: Arc<ConnState>,
}

impl ConnInfo {
    /// Marks the connection as having made an authenticated call: it is no longer timed
    /// out or evicted for idling.
    pub fn authenticate(&self) {
        self.state.authenticated.store(true, Ordering::Relaxed);
    }
}

/// The connections open, oldest first.
#[derive(Default)]
struct Registry {
    open: AtomicUsize,
    conns: Mutex<VecDeque<Weak<ConnState>>>,
}

impl Registry {
    /// Makes room for a newcomer: true when it may come in.
    fn admit(&self, max: usize) -> bool {
        if self.open.load(Ordering::SeqCst) < max {
            return true;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        let victim = conns.iter().position(|w| {
            w.upgrade().is_some_and(|s| {
                !s.authenticated.load(Ordering::Relaxed) && !s.closed.load(Ordering::SeqCst)
            })
        });
        match victim
            .and_then(|i| conns.remove(i))
            .and_then(|w| w.upgrade())
        {
            Some(s) => {
                s.close();
                true
            }
            None => false,
        }
    }

    fn enter(self: &Arc<Self>, state: &Arc<ConnState>) -> Slot {
        self.open.fetch_add(1, Ordering::SeqCst);
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() > 1024 && conns.len() > 2 * self.open.load(Ordering::SeqCst) {
            conns.retain(|w| w.strong_count() > 0);
        }
        conns.push_back(Arc::downgrade(state));
        Slot(self.clone())
    }
}

/// A connection's place in the count, given back when it is dropped.
struct Slot(Arc<Registry>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The byte stream under a connection.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection tonic serves: its transport, watched by the door.
pub struct Conn {
    io: Transport,
    info: ConnInfo,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Conn {
    /// Fails the connection when the door closed it or it made no authenticated call in
    /// time; otherwise remembers who to wake.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let s = &self.info.state;
        if s.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: too many connections and this one never made an authenticated call",
            ));
        }
        if !s.authenticated.load(Ordering::Relaxed) && self.deadline.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed: no authenticated call in time",
            ));
        }
        *s.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut this.io {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.info.state.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match &mut this.io {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The connections of `listener` as tonic's `serve_with_incoming` takes them.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: Limits,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let registry = Arc::new(Registry::default());
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            if !registry.admit(limits.max_connections) {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(
                        "{refused} connection(s) refused: {} open, all authenticated (max_connections)",
                        limits.max_connections
                    );
                }
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let state = Arc::new(ConnState::default());
            let slot = registry.enter(&state);
            let conn = move |io, tls| Conn {
                io,
                info: ConnInfo {
                    remote: Some(remote),
                    tls,
                    state,
                },
                deadline: Box::pin(tokio::time::sleep(limits.auth_timeout)),
                _slot: slot,
            };
            match &tls {
                None => {
                    if tx
                        .send(Ok(conn(Transport::Plain(tcp), false)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Some(t) => {
                    let acceptor = t.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok(conn(Transport::Tls(Box::new(s)), true))).await;
                            }
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {remote}: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {remote}: timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
