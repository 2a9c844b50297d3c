//! Connection guards the HTTP server does not have: a deadline for each request's head and body
//! (a client sending its headers a byte at a time held a connection for minutes), and a cap on
//! one client address's open connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Guards {
    /// From a connection's start, or a request's first byte, to the end of its head.
    pub head_timeout: Duration,
    /// From the end of a request's head until the response starts (a body sent slowly).
    pub body_timeout: Duration,
    /// Between requests (and between writes of a streamed response): an idle keep-alive
    /// connection is closed after this.
    pub idle_timeout: Duration,
    /// Open connections one client address may hold; more are closed at once.
    pub max_per_client: usize,
}

type Open = Arc<Mutex<HashMap<IpAddr, usize>>>;

pub struct GuardedAcceptor<A> {
    inner: A,
    guards: Guards,
    open: Open,
}

impl<A> GuardedAcceptor<A> {
    pub fn new(inner: A, guards: Guards) -> Self {
        Self {
            inner,
            guards,
            open: Default::default(),
        }
    }
}

impl<A: Acceptor> Acceptor for GuardedAcceptor<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            let ip = remote.as_socket_addr().map(|a| a.ip());
            if let Some(ip) = ip {
                let mut open = self.open.lock().expect("open connections lock");
                let n = open.entry(ip).or_default();
                if *n >= self.guards.max_per_client {
                    tracing::warn!(%ip, open = *n, "connection refused: too many from one client");
                    continue; // dropping `io` closes it
                }
                *n += 1;
            }
            let io = GuardedIo {
                inner: io,
                guards: self.guards,
                phase: Phase::Head,
                deadline: Box::pin(tokio::time::sleep(self.guards.head_timeout)),
                matched: 0,
                client: ip.map(|ip| (ip, self.open.clone())),
            };
            return Ok((io, local, remote, scheme));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Between requests, or writing a response.
    Idle,
    /// Reading a request's head.
    Head,
    /// Head read, response not started: the body is being read or the request handled.
    Body,
}

pub struct GuardedIo<T> {
    inner: T,
    guards: Guards,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// How much of "\r\n\r\n" (the end of a head) the last bytes read matched.
    matched: usize,
    client: Option<(IpAddr, Open)>,
}

impl<T> GuardedIo<T> {
    fn saw(&mut self, bytes: &[u8]) {
        const END: &[u8] = b"\r\n\r\n";
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.matched = 0;
            self.deadline
                .as_mut()
                .reset(Instant::now() + self.guards.head_timeout);
        }
        if self.phase != Phase::Head {
            return;
        }
        for &b in bytes {
            self.matched = if b == END[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                self.phase = Phase::Body;
                self.deadline
                    .as_mut()
                    .reset(Instant::now() + self.guards.body_timeout);
                return;
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            let what = match this.phase {
                Phase::Idle => "next request",
                Phase::Head => "request head",
                Phase::Body => "request body",
            };
            if this.phase == Phase::Idle {
                tracing::debug!("idle connection closed");
            } else {
                tracing::warn!(what, "request too slow: connection closed");
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} not received in time"),
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = buf.filled()[before..].to_vec();
            this.saw(&new);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The response has started: the request is no longer the client's to deliver.
        let idle = self.guards.idle_timeout;
        self.phase = Phase::Idle;
        self.deadline.as_mut().reset(Instant::now() + idle);
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> Drop for GuardedIo<T> {
    fn drop(&mut self) {
        if let Some((ip, open)) = &self.client {
            let mut open = open.lock().expect("open connections lock");
            if let Some(n) = open.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(ip);
                }
            }
        }
    }
}
