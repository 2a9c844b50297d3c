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
                pending: Vec::new(),
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
    /// A rewritten response not yet written out (see [`problem_for_bare`]).
    pending: Vec<u8>,
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

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes out what [`problem_for_bare`] produced before anything else.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        if !this.pending.is_empty() {
            return Poll::Pending;
        }
        let starts_response = this.phase != Phase::Idle;
        // The response has started: the request is no longer the client's to deliver.
        this.phase = Phase::Idle;
        this.deadline
            .as_mut()
            .reset(Instant::now() + this.guards.idle_timeout);
        if starts_response && let Some(problem) = problem_for_bare(data) {
            this.pending = problem;
            let _ = this.poll_pending(cx);
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The HTTP layer answers a request it cannot parse (a control character in a header, a head too
/// large) itself, with an empty 4xx that never reaches the application. Such a response — the app
/// never sends a 4xx without a problem body — is rewritten as a problem document.
fn problem_for_bare(data: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    let (status_line, rest) = text.split_once("\r\n")?;
    let status = status_line.strip_prefix("HTTP/1.1 ")?;
    let code: u16 = status.get(..3)?.parse().ok()?;
    let headers = rest
        .strip_suffix("\r\n\r\n")
        .unwrap_or(rest.strip_suffix("\r\n")?);
    let is_empty = headers
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"));
    if !(400..500).contains(&code) || !is_empty {
        return None;
    }
    let title = status.get(4..).unwrap_or("Bad Request");
    let detail = match code {
        431 => "the request's headers are too large",
        400 => {
            "the request could not be parsed: a header holds a character HTTP does not allow, or the request line or a header is malformed"
        }
        _ => "the request was refused before it could be read",
    };
    let body = serde_json::json!({
        "type": format!("https://stoflow.dev/problems/{}", title.to_lowercase().replace(' ', "-")),
        "title": title,
        "status": code,
        "detail": detail,
    })
    .to_string();
    let mut out = format!("{status_line}\r\n");
    for h in headers
        .split("\r\n")
        .filter(|h| !h.to_ascii_lowercase().starts_with("content-length:"))
    {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_4xx_from_the_http_layer_becomes_a_problem_and_nothing_else_changes() {
        let bare = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(super::problem_for_bare(bare).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 400);
        // Responses with a body, and successes, are left alone.
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n{\"a\":\"b\"}  ";
        assert!(super::problem_for_bare(app).is_none());
        assert!(
            super::problem_for_bare(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .is_none()
        );
    }
}
