//! Serving: a TCP acceptor whose connections can be cut on demand (to simulate a connection
//! dropped mid-request), and the spawn/shutdown plumbing shared by the three simulators.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Server};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::log::lock;

/// Peers whose connection must be closed instead of answered. A handler cannot close its own
/// connection in poem, so it names the peer here and the stream fails its next write; hyper
/// then drops the connection and the client sees it closed with no response.
pub type Kills = Arc<Mutex<HashSet<SocketAddr>>>;

pub struct KillAcceptor {
    inner: TcpAcceptor,
    kills: Kills,
}

impl Acceptor for KillAcceptor {
    type Io = KillableStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let peer = remote.as_socket_addr().copied();
        let stream = KillableStream {
            inner: io,
            peer,
            kills: self.kills.clone(),
            dead: false,
        };
        Ok((stream, local, remote, scheme))
    }
}

pub struct KillableStream {
    inner: TcpStream,
    peer: Option<SocketAddr>,
    kills: Kills,
    dead: bool,
}

impl KillableStream {
    /// Once killed, a stream stays dead: hyper may retry a failed write, and that retry must
    /// fail too or the response would still get out.
    fn killed(&mut self) -> bool {
        if !self.dead {
            self.dead = self.peer.is_some_and(|p| lock(&self.kills).remove(&p));
        }
        self.dead
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "dropped by fault injection",
            )));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "dropped by fault injection",
            )));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A running server: its base URL, and the means to stop it.
pub struct Served {
    pub url: String,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<io::Result<()>>,
}

pub async fn serve(
    host: &str,
    port: u16,
    app: impl Endpoint + 'static,
    kills: Kills,
) -> io::Result<Served> {
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let acceptor = KillAcceptor {
        inner: TcpAcceptor::from_tokio(listener)?,
        kills,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            app,
            async move {
                let _ = stopped.await;
            },
            Some(Duration::from_secs(2)),
        ),
    );
    Ok(Served {
        url: format!("http://{addr}"),
        stop,
        task,
    })
}
