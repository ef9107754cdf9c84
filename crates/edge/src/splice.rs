//! Response bodies passed from an instance's connection to the client's inside the kernel.
//!
//! A body read into the edge and written out again is copied twice (socket to edge, edge
//! to socket); for a large one the copies are most of what relaying it costs. Through a
//! pipe, `splice(2)` hands the socket buffers' pages from one connection to the other
//! without either copy. The lean path ([`crate::fast`]) splices plain-HTTP bodies of known
//! length once the response head is read; a body over TLS is encrypted in user space, so
//! it is copied as before.
//!
//! Waiting never blocks a worker: splices are non-blocking, and when there is nothing to
//! move the ordinary read or write of the connection does the waiting (it copies what it
//! carries: a little of the body, not all of it).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bodies with at least this much still to come once the response head is read are spliced.
pub const MIN_BODY: u64 = 32 * 1024;
/// What a pipe holds (a bigger pipe, fewer splices; the kernel may grant less).
const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes a worker keeps for its next bodies.
const KEPT_PIPES: usize = 16;
/// Most bytes a wait for the instance copies (what comes after them is spliced).
const WAIT_READ: u64 = crate::uring::BUFFER as u64;

/// A connection a body can be spliced from or to.
pub trait SpliceEnd {
    /// The socket, when bytes may be spliced in or out of it now: not while bytes read from
    /// it wait in a buffer or a read or write of it is under way (they would pass each
    /// other), and never for TLS.
    fn splice_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Makes the socket non-blocking, or blocking again, if it is kept blocking otherwise:
    /// a splice takes its blocking mode from the socket.
    fn nonblocking(&self, _on: bool) -> io::Result<()> {
        Ok(())
    }
}

impl SpliceEnd for tokio::net::TcpStream {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl<S> SpliceEnd for tokio_rustls::server::TlsStream<S> {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// How a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Spliced {
    /// The body passed whole.
    Done,
    /// The rest of the body (what is left of it) is for the ordinary read and write: an end
    /// cannot splice now, or no pipe could be made.
    Stopped,
    /// The instance closed before the body ended, or the client went.
    Broken,
}

/// A pipe between two connections, empty when not in use.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    fn take() -> Option<Pipe> {
        if let Some(pipe) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Some(pipe);
        }
        let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
        let (read, write) = rustix::pipe::pipe_with(flags).ok()?;
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Some(Pipe { read, write })
    }

    fn give_back(self) {
        PIPES.with(|p| {
            let mut pipes = p.borrow_mut();
            if pipes.len() < KEPT_PIPES {
                pipes.push(self);
            }
        });
    }

    /// Reads the `held` bytes the pipe holds into `buf`.
    fn drain(&self, held: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(held, 0);
        let mut got = 0;
        while got < held {
            match rustix::io::read(&self.read, &mut buf[got..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(())
    }
}

/// Sends what goes before a spliced body (the response head, the body's first bytes) to
/// `client` without pushing it out (`MSG_MORE`): it leaves with the body's first splice, so
/// the client is woken once for both. Returns how much was taken (the rest is for an
/// ordinary write), or `None` if `client` cannot splice now.
pub fn send_before<S: SpliceEnd>(client: &S, parts: &[io::IoSlice<'_>]) -> Option<usize> {
    let fd = client.splice_fd()?;
    let flags = rustix::net::SendFlags::MORE
        | rustix::net::SendFlags::DONTWAIT
        | rustix::net::SendFlags::NOSIGNAL;
    let mut control = rustix::net::SendAncillaryBuffer::default();
    match rustix::net::sendmsg(fd, parts, &mut control, flags) {
        Ok(n) => Some(n),
        Err(_) => Some(0),
    }
}

fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> rustix::io::Result<usize> {
    let flags = rustix::pipe::SpliceFlags::MOVE | rustix::pipe::SpliceFlags::NONBLOCK;
    rustix::pipe::splice(from, None, to, None, len, flags)
}

/// Passes the next `left` bytes of a body from `conn` to `client`, counting down `left` as
/// they go; `buf` is for what is copied while waiting. With [`Spliced::Stopped`], `left`
/// says what is still to be relayed.
pub async fn relay<C, S>(conn: &mut C, client: &mut S, left: &mut u64, buf: &mut Vec<u8>) -> Spliced
where
    C: AsyncRead + SpliceEnd + Unpin,
    S: AsyncWrite + SpliceEnd + Unpin,
{
    if conn.splice_fd().is_none() || client.splice_fd().is_none() {
        return Spliced::Stopped;
    }
    let Some(pipe) = Pipe::take() else {
        return Spliced::Stopped;
    };
    if conn.nonblocking(true).is_err() || client.nonblocking(true).is_err() {
        let _ = conn.nonblocking(false);
        let _ = client.nonblocking(false);
        pipe.give_back();
        return Spliced::Stopped;
    }
    let mut held = 0usize;
    let outcome = loop {
        if *left == 0 && held == 0 {
            break Spliced::Done;
        }
        let (Some(from), Some(to)) = (conn.splice_fd(), client.splice_fd()) else {
            if held == 0 {
                break Spliced::Stopped;
            }
            // (Not reached: only a read or write of the connection makes it unable to
            // splice, and those happen with the pipe empty.)
            break Spliced::Broken;
        };
        let mut instance_idle = false;
        if *left > 0 {
            let want = (*left).min(PIPE_SIZE as u64) as usize;
            match splice(from, pipe.write.as_fd(), want) {
                Ok(0) => break Spliced::Broken,
                Ok(n) => {
                    *left -= n as u64;
                    held += n;
                }
                // Nothing to read, or (with bytes in it) the pipe is full.
                Err(rustix::io::Errno::AGAIN) => instance_idle = true,
                Err(_) => break Spliced::Broken,
            }
        }
        if held > 0 {
            match splice(pipe.read.as_fd(), to, held) {
                Ok(0) => break Spliced::Broken,
                Ok(n) => held -= n,
                Err(rustix::io::Errno::AGAIN) => {
                    // The client takes no more for now: what the pipe holds goes by the
                    // ordinary write, which waits for room.
                    if pipe.drain(held, buf).is_err() {
                        break Spliced::Broken;
                    }
                    held = 0;
                    if !write_blocking(client, buf).await {
                        break Spliced::Broken;
                    }
                }
                Err(_) => break Spliced::Broken,
            }
        } else if instance_idle {
            // Nothing has come yet: the ordinary read waits for it and takes a little of
            // it; the rest is spliced.
            if conn.nonblocking(false).is_err() {
                break Spliced::Broken;
            }
            buf.clear();
            buf.reserve(WAIT_READ as usize);
            let read = (&mut *conn)
                .take((*left).min(WAIT_READ))
                .read_buf(buf)
                .await;
            if conn.nonblocking(true).is_err() {
                break Spliced::Broken;
            }
            match read {
                Ok(0) | Err(_) => break Spliced::Broken,
                Ok(n) => *left -= n as u64,
            }
            if !write_blocking(client, buf).await {
                break Spliced::Broken;
            }
        }
    };
    let restored = conn.nonblocking(false).is_ok() && client.nonblocking(false).is_ok();
    if held == 0 {
        pipe.give_back();
    }
    if restored {
        outcome
    } else {
        Spliced::Broken
    }
}

/// Writes `bytes` to `client` the ordinary way (in its usual blocking mode).
async fn write_blocking<S: AsyncWrite + SpliceEnd + Unpin>(client: &mut S, bytes: &[u8]) -> bool {
    if client.nonblocking(false).is_err() {
        return false;
    }
    let written = client.write_all(bytes).await.is_ok();
    client.nonblocking(true).is_ok() && written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::tests::pair;
    use crate::uring::UringStream;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn tokio_pair() -> (std::net::TcpStream, tokio::net::TcpStream) {
        let (a, b) = pair();
        b.set_nonblocking(true).unwrap();
        (a, tokio::net::TcpStream::from_std(b).unwrap())
    }

    /// Bytes that show any loss, repeat or reordering.
    fn body(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    /// An instance sending `data` in pieces with pauses (the relay waits for each), then
    /// bytes past the body.
    fn instance_sends(mut instance: std::net::TcpStream, data: Vec<u8>) {
        std::thread::spawn(move || {
            for piece in data.chunks(300_000) {
                instance.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            instance.write_all(b"next").unwrap();
        });
    }

    /// A client that starts reading late (the relay finds its socket full) and reads `len`.
    fn client_reads(
        mut client: std::net::TcpStream,
        len: usize,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        rustix::net::sockopt::set_socket_recv_buffer_size(&client, 32 * 1024).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut got = vec![0u8; len];
            client.read_exact(&mut got).unwrap();
            got
        })
    }

    #[tokio::test]
    async fn a_body_passes_whole_and_in_order_and_what_follows_it_stays() {
        let data = body(4 << 20);
        let (instance, mut conn) = tokio_pair();
        let (client, mut to_client) = tokio_pair();
        instance_sends(instance, data.clone());
        let received = client_reads(client, data.len());
        let mut left = data.len() as u64;
        let mut buf = Vec::new();
        let outcome = relay(&mut conn, &mut to_client, &mut left, &mut buf).await;
        assert_eq!(outcome, Spliced::Done);
        assert_eq!(left, 0);
        assert!(received.join().unwrap() == data, "the body arrived changed");
        let mut next = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut next)
            .await
            .unwrap();
        assert_eq!(&next, b"next");
    }

    #[tokio::test]
    async fn an_instance_that_closes_before_the_body_ends_breaks_the_relay() {
        let (mut instance, mut conn) = tokio_pair();
        let (_client, mut to_client) = tokio_pair();
        std::thread::spawn(move || {
            instance.write_all(&body(100_000)).unwrap();
        });
        let mut left = 1_000_000;
        let outcome = relay(&mut conn, &mut to_client, &mut left, &mut Vec::new()).await;
        assert_eq!(outcome, Spliced::Broken);
        assert_eq!(left, 900_000);
    }

    #[test]
    fn on_the_ring_a_body_passes_whole_and_the_sockets_are_blocking_again() {
        let rt = crate::uring::runtime().unwrap();
        rt.block_on(async {
            let data = body(4 << 20);
            let (instance, conn) = pair();
            let (client, to_client) = pair();
            let mut conn = UringStream::from_std(conn, crate::uring::BUFFER);
            let mut to_client = UringStream::from_std(to_client, crate::uring::BUFFER);
            instance_sends(instance, data.clone());
            let received = client_reads(client, data.len());
            let mut left = data.len() as u64;
            let outcome = relay(&mut conn, &mut to_client, &mut left, &mut Vec::new()).await;
            assert_eq!(outcome, Spliced::Done);
            assert!(received.join().unwrap() == data, "the body arrived changed");
            for end in [&conn, &to_client] {
                let flags = rustix::fs::fcntl_getfl(end.splice_fd().unwrap()).unwrap();
                assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK));
            }
            // The ring's own reads go on where the splice stopped.
            let mut next = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut conn, &mut next)
                .await
                .unwrap();
            assert_eq!(&next, b"next");
        });
    }
}
