//! A graceful upgrade of the edge: the running edge hands its listening sockets to its
//! successor over a Unix socket (`SCM_RIGHTS`), so both accept from the same kernel queue
//! while the successor starts — no connection is refused, none waits in a queue nobody
//! reads. Once the successor serves, the predecessor stops accepting, finishes the requests
//! it holds, and sends its final request counts, which the successor carries on from (the
//! counters a scrape reads never go backwards across an upgrade).
//!
//! The exchange on one stream: the predecessor sends [`GREETING`] with the listeners'
//! descriptors; the successor answers [`READY`] once it serves; the predecessor, drained,
//! writes its counts as JSON and closes.

use berth_core::metrics::EdgeMetricsSnapshot;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the predecessor sends with its descriptors.
pub const GREETING: &[u8] = b"berth-edge-handover 1\n";
/// What the successor answers once it serves.
pub const READY: &[u8] = b"ready\n";
/// Most listeners handed over (a group for plain HTTP and one for HTTPS).
const MAX_LISTENERS: usize = 2 * crate::listen::MAX_GROUP;
/// Longest the predecessor waits for its successor to say it serves.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("no running edge offers its sockets at {path}: {source}")]
    NoPredecessor {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the running edge's handover failed: {0}")]
    Protocol(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> HandoverError {
    move |source| HandoverError::Io { context, source }
}

/// The successor's side: the listeners taken over, and the stream to the predecessor.
pub struct Successor {
    stream: UnixStream,
}

impl Successor {
    /// Connects to the edge offering its sockets at `path` and takes its listeners.
    pub fn take_over(path: &Path) -> Result<(Self, Vec<std::net::TcpListener>), HandoverError> {
        let stream = UnixStream::connect(path).map_err(|source| HandoverError::NoPredecessor {
            path: path.display().to_string(),
            source,
        })?;
        stream
            .set_read_timeout(Some(READY_WAIT))
            .map_err(io("setting a timeout on the handover socket"))?;
        let mut greeting = [0u8; 64];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            stream.as_fd(),
            &mut [IoSliceMut::new(&mut greeting)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| io("receiving the listeners")(e.into()))?;
        let mut listeners = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                listeners.extend(fds.map(std::net::TcpListener::from));
            }
        }
        if greeting.get(..received.bytes) != Some(GREETING) {
            return Err(HandoverError::Protocol(
                "it did not send the expected greeting (an edge of another version?)".into(),
            ));
        }
        if listeners.is_empty() {
            return Err(HandoverError::Protocol("it sent no listener".into()));
        }
        for l in &listeners {
            l.set_nonblocking(true)
                .map_err(io("preparing a listener taken over"))?;
        }
        Ok((Self { stream }, listeners))
    }

    /// Tells the predecessor this edge serves: it stops accepting and drains.
    pub fn ready(&mut self) -> Result<(), HandoverError> {
        self.stream
            .write_all(READY)
            .map_err(io("telling the running edge to stop"))
    }

    /// The predecessor's request counts once it has drained (`None` if it went away
    /// without sending them). Blocks up to `wait`.
    pub fn final_counts(mut self, wait: Duration) -> Option<EdgeMetricsSnapshot> {
        self.stream.set_read_timeout(Some(wait)).ok()?;
        let mut text = Vec::new();
        self.stream.read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// The predecessor's side, once a successor said it serves: where to send the final counts.
pub type HandedOver = Arc<Mutex<Option<UnixStream>>>;

/// Offers `listeners` at `path` (replacing whatever socket file is there) until one
/// successor takes them and says it serves; then cancels `stop` (this edge stops accepting
/// and drains) and keeps the stream in the returned slot for [`send_final_counts`]. A
/// successor that fails before it serves changes nothing: the offer stands.
pub fn offer(
    path: PathBuf,
    listeners: Vec<OwnedFd>,
    stop: CancellationToken,
) -> Result<HandedOver, HandoverError> {
    let _ = std::fs::remove_file(&path);
    let server = UnixListener::bind(&path).map_err(io("offering the edge's sockets"))?;
    let slot: HandedOver = Arc::default();
    let out = slot.clone();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            if stop.is_cancelled() {
                break;
            }
            let Ok(stream) = conn else { continue };
            match hand_to(&stream, &listeners) {
                Ok(()) => {
                    tracing::info!("a new edge serves; this one stops accepting and drains");
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(stream);
                    }
                    stop.cancel();
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "a new edge failed to take over; serving on"),
            }
        }
    });
    Ok(out)
}

/// Sends the listeners on `stream` and waits for the successor's [`READY`].
fn hand_to(stream: &UnixStream, listeners: &[OwnedFd]) -> Result<(), HandoverError> {
    let fds: Vec<_> = listeners.iter().map(|l| l.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(HandoverError::Protocol("too many listeners".into()));
    }
    rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(GREETING)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| io("sending the listeners")(e.into()))?;
    stream
        .set_read_timeout(Some(READY_WAIT))
        .map_err(io("waiting for the new edge"))?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(READY.len() as u64)
        .read_until(b'\n', &mut line)
        .map_err(io("waiting for the new edge"))?;
    if line != READY {
        return Err(HandoverError::Protocol(
            "it closed the connection before serving".into(),
        ));
    }
    Ok(())
}

/// Sends this edge's final counts to the successor that took over (if one did); returns
/// whether it did — the successor then writes the counts file, not this edge.
pub fn send_final_counts(slot: &HandedOver, counts: &EdgeMetricsSnapshot) -> bool {
    let Some(mut stream) = slot.lock().ok().and_then(|mut s| s.take()) else {
        return false;
    };
    if let Ok(text) = serde_json::to_vec(counts) {
        let _ = stream.write_all(&text);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_pass_to_the_successor_who_serves_on_the_same_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let slot = offer(path.clone(), vec![OwnedFd::from(listener)], stop.clone()).unwrap();

        let (mut successor, taken) = Successor::take_over(&path).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].local_addr().unwrap(), addr);
        // A connection made now waits in the shared queue; the successor accepts it.
        let client = std::net::TcpStream::connect(addr).unwrap();
        taken[0].set_nonblocking(false).unwrap();
        let (accepted, _) = taken[0].accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());

        assert!(!stop.is_cancelled());
        successor.ready().unwrap();
        for _ in 0..200 {
            if stop.is_cancelled() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(stop.is_cancelled(), "the predecessor stops once told");
        let counts = EdgeMetricsSnapshot {
            started_at: 7,
            written_at: 9,
            series: vec![],
        };
        assert!(send_final_counts(&slot, &counts));
        assert!(!send_final_counts(&slot, &counts), "sent once");
        let got = successor.final_counts(Duration::from_secs(5)).unwrap();
        assert_eq!(got.started_at, 7);
    }

    #[test]
    fn no_predecessor_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Successor::take_over(&dir.path().join("none.sock"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no running edge offers its sockets"), "{err}");
    }
}
