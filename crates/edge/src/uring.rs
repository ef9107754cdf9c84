//! Plain-HTTP connections on io_uring, for the lean path ([`crate::fast`]).
//!
//! Under load an edge worker makes four system calls per request on epoll — a read and a
//! write each way — and every write that wakes a peer (the client, the instance) is a point
//! where that peer takes the core: the worker is switched out once per write. On io_uring a
//! worker queues the reads and writes of all its ready connections and hands them to the
//! kernel in one call when it has nothing else to do (`COOP_TASKRUN`: completions are taken
//! at that call too, not by interrupting the worker), so a burst of requests costs one
//! switch, not one per write.
//!
//! [`UringStream`] puts a socket on the worker's ring behind tokio's `AsyncRead` and
//! `AsyncWrite`, so the lean path runs unchanged on it; a connection the full proxy is to
//! serve becomes a tokio socket again ([`UringStream::into_tokio`]). A connection comes to
//! the ring once it is kept alive after its first request (see `server.rs`): one that brings
//! a single request and closes is served best on epoll. Where io_uring is unavailable (an
//! old kernel, a seccomp profile that forbids it, `io_uring_disabled`), the workers run on
//! epoll throughout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Submission queue entries per worker ring (completions: twice as many).
const RING_ENTRIES: u32 = 1024;
/// Read buffer of a connection on the ring: a request or response head fits; a body
/// flowing in goes past it (see [`DIRECT`]).
pub const BUFFER: usize = 8 * 1024;
/// Reads and writes at least this large (a response body's) go straight between the
/// caller's buffer and the socket by a system call of their own when the socket is ready:
/// copying them through the ring's buffers would cost more than the call.
const DIRECT: usize = 16 * 1024;

/// A worker's runtime on io_uring, or why there is none.
pub fn runtime() -> io::Result<tokio_uring::Runtime> {
    let mut ring = tokio_uring::uring_builder();
    // Completions are run when the worker enters the kernel anyway, never by interrupting it.
    ring.setup_coop_taskrun().setup_taskrun_flag();
    tokio_uring::Runtime::new(
        tokio_uring::builder()
            .entries(RING_ENTRIES)
            .uring_builder(&ring),
    )
}

type Op = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// A TCP connection on the worker's ring, read and written through tokio's traits.
pub struct UringStream {
    socket: Rc<tokio_uring::net::TcpStream>,
    /// What the last read brought, from `read_pos` on not yet taken.
    read_buf: Vec<u8>,
    read_pos: usize,
    reading: Option<Op>,
    /// A write under way and its buffer's next use.
    writing: Option<Op>,
    write_buf: Vec<u8>,
    buffer: usize,
    /// Whether the last read found more than its buffer took or read straight from the
    /// socket: a body is flowing in, so the next large read is tried straight away too.
    flowing: bool,
}

impl UringStream {
    /// Puts `stream` on the current worker's ring; reads through it take up to `buffer`
    /// bytes at a time. The stream is in blocking mode, as `accept` returns it.
    pub fn from_std(stream: std::net::TcpStream, buffer: usize) -> Self {
        Self::new(tokio_uring::net::TcpStream::from_std(stream), buffer)
    }

    fn new(socket: tokio_uring::net::TcpStream, buffer: usize) -> Self {
        Self {
            socket: Rc::new(socket),
            read_buf: Vec::with_capacity(buffer),
            read_pos: 0,
            reading: None,
            writing: None,
            write_buf: Vec::new(),
            buffer,
            flowing: false,
        }
    }

    /// Connects to `addr` (with `TCP_NODELAY`: requests go out whole, at once).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let socket = tokio_uring::net::TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Self::new(socket, BUFFER))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        borrow(self.socket.as_ref())
    }

    /// Whether the peer has neither sent anything nor closed (for an idle pooled connection):
    /// bytes already read into this stream's buffer count as sent, and so does a read
    /// under way (what it brings was sent after the last response).
    pub fn still_open(&self) -> bool {
        if self.reading.is_some() || self.read_pos < self.read_buf.len() {
            return false;
        }
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        matches!(
            rustix::net::recv(self.fd(), &mut [0u8; 1], flags),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    /// The same connection as a tokio socket, for the full proxy. Refused while a read or a
    /// write is under way (what it brings would be lost).
    pub fn into_tokio(self) -> io::Result<tokio::net::TcpStream> {
        if self.reading.is_some() || self.writing.is_some() || self.read_pos < self.read_buf.len() {
            return Err(io::Error::other(
                "the connection has reads or writes under way",
            ));
        }
        let fd: OwnedFd = rustix::io::fcntl_dupfd_cloexec(self.fd(), 0)?;
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    /// Polls the write under way; its buffer comes back for the next.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(op) = self.writing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let (result, buf) = std::task::ready!(op.as_mut().poll(cx));
        self.writing = None;
        self.write_buf = buf;
        Poll::Ready(result)
    }

    fn start_write(&mut self, parts: &[&[u8]]) {
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        for part in parts {
            buf.extend_from_slice(part);
        }
        let socket = self.socket.clone();
        self.writing = Some(Box::pin(async move { socket.write(buf).submit().await }));
    }

    fn write_parts(&mut self, cx: &mut Context<'_>, parts: &[&[u8]]) -> Poll<io::Result<usize>> {
        // A write is answered once the kernel took it; a caller asked again after `Pending`
        // passes the same bytes, so the write under way is theirs.
        if self.writing.is_none() {
            let total: usize = parts.iter().map(|p| p.len()).sum();
            if total == 0 {
                return Poll::Ready(Ok(0));
            }
            if total >= DIRECT {
                let iov: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
                let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
                let mut control = rustix::net::SendAncillaryBuffer::default();
                match rustix::net::sendmsg(self.fd(), &iov, &mut control, flags) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Poll::Ready(Err(e.into())),
                }
            }
            self.start_write(parts);
        }
        self.poll_written(cx)
    }
}

/// Reads what the socket holds into `out`'s unfilled part, without waiting.
#[allow(unsafe_code)]
fn recv_into(fd: BorrowedFd<'_>, out: &mut ReadBuf<'_>) -> rustix::io::Result<()> {
    // SAFETY: `recv` only writes into the unfilled part, and the `n` bytes it reports
    // received are initialized by it before they are marked so.
    let ((filled, _), _) = rustix::net::recv(
        fd,
        unsafe { out.unfilled_mut() },
        rustix::net::RecvFlags::DONTWAIT,
    )?;
    let n = filled.len();
    unsafe { out.assume_init(n) };
    out.advance(n);
    Ok(())
}

/// The socket's descriptor, borrowed for as long as the socket is.
#[allow(unsafe_code)]
fn borrow(socket: &tokio_uring::net::TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the descriptor belongs to `socket`, which stays open (it closes only when
    // dropped) for the borrow's lifetime, tied to `socket`'s.
    unsafe { BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}

impl AsyncRead for UringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let idle = this.reading.is_none() && this.read_pos == this.read_buf.len();
        if idle && this.flowing && out.remaining() >= DIRECT {
            match recv_into(this.fd(), out) {
                Err(rustix::io::Errno::AGAIN) => this.flowing = false,
                done => return Poll::Ready(done.map_err(Into::into)),
            }
        }
        if this.reading.is_some() || this.read_pos == this.read_buf.len() {
            if this.reading.is_none() {
                this.read_pos = 0;
                let mut buf = std::mem::take(&mut this.read_buf);
                buf.clear();
                buf.reserve(this.buffer);
                let socket = this.socket.clone();
                this.reading = Some(Box::pin(async move { socket.read(buf).await }));
            }
            let Some(op) = this.reading.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let (result, buf) = std::task::ready!(op.as_mut().poll(cx));
            this.reading = None;
            this.read_buf = buf;
            this.read_pos = 0;
            match result {
                Ok(n) => this.flowing = n >= this.buffer,
                Err(e) => {
                    this.read_buf.clear();
                    return Poll::Ready(Err(e));
                }
            }
        }
        let ready = &this.read_buf[this.read_pos..];
        let n = ready.len().min(out.remaining());
        out.put_slice(&ready[..n]);
        this.read_pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_parts(cx, &[buf])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        self.write_parts(cx, &parts)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is held back: a write is done when it is answered.
        self.poll_written(cx).map_ok(|_| ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_written(cx))?;
        Poll::Ready(self.socket.shutdown(std::net::Shutdown::Write))
    }
}

impl crate::splice::SpliceEnd for UringStream {
    fn splice_fd(&self) -> Option<BorrowedFd<'_>> {
        let idle = self.reading.is_none() && self.writing.is_none();
        (idle && self.read_pos == self.read_buf.len()).then(|| self.fd())
    }

    fn nonblocking(&self, on: bool) -> io::Result<()> {
        // Kept blocking otherwise: the ring's reads and writes wait on a blocking socket.
        Ok(rustix::io::ioctl_fionbio(self.fd(), on)?)
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        // A read or write still under way holds the socket open until the kernel answers
        // it, which on an idle connection is never: ending the connection answers it (and
        // tells the peer, as a close would).
        if self.reading.is_some() || self.writing.is_some() {
            let _ = rustix::net::shutdown(self.fd(), rustix::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two ends of a TCP connection on loopback.
    pub(crate) fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_pass_both_ways_and_the_socket_goes_back_to_tokio_whole() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let (mut peer, mine) = pair();
            let mut s = UringStream::from_std(mine, 4);
            peer.write_all(b"hello, edge").unwrap();
            // A read buffer smaller than what came: the rest is read next.
            let mut got = vec![0u8; 11];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, b"hello, edge");
            s.write_all(b"and back").await.unwrap();
            let mut back = [0u8; 8];
            peer.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"and back");
            assert!(s.still_open());

            let mut t = s.into_tokio().unwrap();
            peer.write_all(b"on tokio").unwrap();
            let mut more = [0u8; 8];
            t.read_exact(&mut more).await.unwrap();
            assert_eq!(&more, b"on tokio");
        });
    }

    #[test]
    fn large_bodies_pass_whole_both_ways() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let (peer, mine) = pair();
            let mut s = UringStream::from_std(mine, 4096);
            let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            // Out: more than the socket buffers hold, so some writes wait for room.
            let mut reader = peer.try_clone().unwrap();
            let expected = body.clone();
            let received = std::thread::spawn(move || {
                let mut got = vec![0u8; expected.len()];
                reader.read_exact(&mut got).unwrap();
                got == expected
            });
            s.write_all(&body).await.unwrap();
            assert!(received.join().unwrap(), "the peer got every byte in order");
            // In: read through a large buffer, as a response body is relayed.
            let mut writer = peer;
            let sent = body.clone();
            std::thread::spawn(move || writer.write_all(&sent).unwrap());
            let mut got = Vec::new();
            while got.len() < body.len() {
                let mut chunk = Vec::with_capacity(64 * 1024);
                assert!(s.read_buf(&mut chunk).await.unwrap() > 0);
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got, body);
        });
    }

    #[test]
    fn a_connection_dropped_while_reading_is_closed_for_its_peer() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let (mut peer, mine) = pair();
            let mut s = UringStream::from_std(mine, 64);
            let mut buf = [0u8; 1];
            // A read under way on an idle connection, given up (as a timeout does).
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(50), s.read(&mut buf)).await;
            assert!(waited.is_err(), "nothing was sent");
            assert!(s.into_tokio().is_err(), "a read is under way");
            peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut rest = Vec::new();
            assert_eq!(
                peer.read_to_end(&mut rest).unwrap(),
                0,
                "the peer sees the end"
            );
        });
    }

    #[test]
    fn a_closed_peer_is_noticed_on_an_idle_connection() {
        let rt = runtime().unwrap();
        rt.block_on(async {
            let (peer, mine) = pair();
            let s = UringStream::from_std(mine, 64);
            assert!(s.still_open());
            drop(peer);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!s.still_open());
        });
    }
}
