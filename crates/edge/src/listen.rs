//! The edge's listening sockets: one per worker for each address, in one `SO_REUSEPORT`
//! group. Each worker accepts from its own queue and the kernel spreads new connections
//! over them, so a new connection wakes one worker — not every worker, of which all but
//! one would then find nothing to accept (what a single shared socket costs).
//!
//! A port that any other socket listens on is refused, another berth's edge included
//! (whose group would otherwise take this one's sockets in): before the group is bound, a
//! socket without `SO_REUSEPORT` is bound to the address, which fails while anything
//! listens there. Two edges started at the very same instant on one port could both pass
//! that check; one started after another cannot.
//!
//! Each socket is tuned once (see [`tune`]) so its connections cost fewer system calls and
//! wake-ups. A graceful upgrade hands every socket of the group to the successor (see
//! [`crate::handover`]), which serves on exactly those: the queues the kernel fills are the
//! ones it reads.

use crate::EdgeError;
use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Pending connections each socket's queue holds (what tokio and nginx use).
const BACKLOG: i32 = 1024;
/// Most sockets in one group: beyond this many workers, workers share sockets.
pub const MAX_GROUP: usize = 64;

/// The listening sockets of one address.
#[derive(Debug)]
pub struct Listeners {
    addr: SocketAddr,
    sockets: Vec<TcpListener>,
}

impl Listeners {
    /// Binds `count` sockets (at least one, at most [`MAX_GROUP`]) to `addr` in one
    /// `SO_REUSEPORT` group, refusing a port another socket listens on. Port 0 binds the
    /// group to one port the system chooses.
    pub fn bind(addr: SocketAddr, count: usize) -> Result<Self, EdgeError> {
        let failed = |source: std::io::Error| EdgeError::Bind { addr, source };
        if addr.port() != 0 {
            // Fails with "address in use" while any socket listens on the address.
            let probe = socket(addr).map_err(failed)?;
            sockopt::set_socket_reuseaddr(&probe, true).map_err(|e| failed(e.into()))?;
            rustix::net::bind(&probe, &addr).map_err(|e| failed(e.into()))?;
        }
        let mut sockets: Vec<TcpListener> = Vec::new();
        let mut bound = addr;
        for _ in 0..count.clamp(1, MAX_GROUP) {
            let fd = socket(bound).map_err(failed)?;
            sockopt::set_socket_reuseaddr(&fd, true).map_err(|e| failed(e.into()))?;
            sockopt::set_socket_reuseport(&fd, true).map_err(|e| failed(e.into()))?;
            tune(&fd).map_err(failed)?;
            rustix::net::bind(&fd, &bound).map_err(|e| failed(e.into()))?;
            rustix::net::listen(&fd, BACKLOG).map_err(|e| failed(e.into()))?;
            let listener = TcpListener::from(fd);
            // The rest of the group joins the port the first one got.
            bound = listener.local_addr().map_err(failed)?;
            sockets.push(listener);
        }
        Ok(Self {
            addr: bound,
            sockets,
        })
    }

    /// The sockets among `taken` (from a graceful upgrade) that listen on `addr`, or `None`
    /// when none does; the others stay in `taken`.
    pub fn take(taken: &mut Vec<TcpListener>, addr: SocketAddr) -> Option<Self> {
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(taken)
            .into_iter()
            .partition(|l| l.local_addr().is_ok_and(|a| a == addr));
        *taken = others;
        for socket in &mine {
            // An edge of an older berth may not have set them.
            if let Err(e) = tune(socket) {
                tracing::warn!(error = %e, %addr, "cannot tune a listener taken over");
            }
        }
        (!mine.is_empty()).then_some(Self {
            addr,
            sockets: mine,
        })
    }

    /// The address the sockets listen on (with the port chosen, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many sockets the group has.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether the group has no socket (never, once bound or taken).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Copies of every socket, to offer a successor.
    pub fn duplicates(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.sockets
            .iter()
            .map(|s| s.try_clone().map(OwnedFd::from))
            .collect()
    }

    /// The sockets dealt to `workers` workers: worker `i` serves sockets `i`, `i + workers`,
    /// …; with fewer sockets than workers (an edge of an older berth handed over one), a
    /// worker without its own shares one.
    pub fn deal(self, workers: usize) -> std::io::Result<Vec<Vec<TcpListener>>> {
        let workers = workers.max(1);
        let count = self.sockets.len();
        let mut hands: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, socket) in self.sockets.into_iter().enumerate() {
            hands[i % workers].push(socket);
        }
        for i in count..workers {
            if count == 0 {
                break;
            }
            let shared = hands[i % count][0].try_clone()?;
            hands[i].push(shared);
        }
        Ok(hands)
    }
}

/// Options of a listening socket that its connections inherit, or that spare the edge work
/// per connection: `TCP_NODELAY` (answers go out as written, no system call per connection
/// to say so) and `TCP_DEFER_ACCEPT` (a connection is accepted once its first bytes are in —
/// a client speaks first in HTTP and TLS — so accepting and reading it is one wake-up of
/// the edge, not two; a client that sends nothing is accepted after about a second anyway).
fn tune(fd: impl AsFd) -> std::io::Result<()> {
    sockopt::set_tcp_nodelay(&fd, true)?;
    set_defer_accept(fd.as_fd(), DEFER_ACCEPT_SECONDS)
}

/// How long the kernel holds a connection that has sent nothing before the edge accepts it.
const DEFER_ACCEPT_SECONDS: i32 = 1;

/// `setsockopt(TCP_DEFER_ACCEPT)`, which neither rustix nor nix wraps.
#[allow(unsafe_code)]
fn set_defer_accept(fd: BorrowedFd<'_>, seconds: i32) -> std::io::Result<()> {
    // SAFETY: `fd` is a valid open descriptor for the call's duration (borrowed), and the
    // option's value is an `int` read from a live local of exactly the length passed.
    let done = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&seconds).cast::<libc::c_void>(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn socket(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn a_group_shares_one_port_and_the_kernel_spreads_connections_over_it() {
        let group = Listeners::bind(any_port(), 2).unwrap();
        let addr = group.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(group.len(), 2);
        let hands = group.deal(2).unwrap();
        let clients: Vec<_> = (0..32)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut accepted_by = HashSet::new();
        let mut accepted = 0;
        for (worker, hand) in hands.iter().enumerate() {
            assert_eq!(hand.len(), 1);
            assert_eq!(hand[0].local_addr().unwrap(), addr);
            while hand[0].accept().is_ok() {
                accepted += 1;
                accepted_by.insert(worker);
            }
        }
        assert_eq!(accepted, clients.len(), "every connection is in one queue");
        // Spread by a hash of each connection's ports: 32 all to one socket is a 1 in 2^31
        // chance.
        assert_eq!(accepted_by.len(), 2, "both workers got connections");
    }

    #[test]
    fn a_connection_is_accepted_once_its_first_bytes_are_in() {
        let group = Listeners::bind(any_port(), 1).unwrap();
        let addr = group.local_addr();
        let socket = group.deal(1).unwrap().remove(0).remove(0);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            socket.accept().is_err(),
            "a silent connection waits in the kernel"
        );
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            if let Ok((conn, _)) = socket.accept() {
                accepted = Some(conn);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut conn = accepted.expect("accepted once it spoke");
        conn.set_nonblocking(false).unwrap();
        let mut first = [0u8; 3];
        conn.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"GET", "its bytes are there to read at once");
        assert!(conn.nodelay().unwrap(), "answers go out as written");
    }

    #[test]
    fn a_port_something_listens_on_is_refused_even_a_group_like_ours() {
        let plain = TcpListener::bind(any_port()).unwrap();
        let err = Listeners::bind(plain.local_addr().unwrap(), 2).unwrap_err();
        assert!(matches!(err, EdgeError::Bind { .. }), "{err}");
        assert!(err.to_string().contains("--edge-port"), "{err}");

        // Another berth's edge: a group that would accept this one's sockets into it.
        let other = Listeners::bind(any_port(), 2).unwrap();
        let err = Listeners::bind(other.local_addr(), 2).unwrap_err();
        assert!(
            err.to_string()
                .contains(&other.local_addr().port().to_string()),
            "{err}"
        );
        // Once it is gone, the port is free again.
        let addr = other.local_addr();
        drop(other);
        assert_eq!(Listeners::bind(addr, 2).unwrap().len(), 2);
    }

    #[test]
    fn fewer_sockets_than_workers_are_shared_and_more_are_dealt_round() {
        let one = Listeners::bind(any_port(), 1).unwrap();
        let addr = one.local_addr();
        let hands = one.deal(3).unwrap();
        assert_eq!(hands.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(hands.iter().all(|h| h[0].local_addr().unwrap() == addr));

        let five = Listeners::bind(any_port(), 5).unwrap();
        let hands = five.deal(2).unwrap();
        assert_eq!(hands.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2]);
    }

    #[test]
    fn sockets_handed_over_are_sorted_by_address() {
        let a = Listeners::bind(any_port(), 2).unwrap();
        let b = Listeners::bind(any_port(), 1).unwrap();
        let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
        let mut taken: Vec<TcpListener> = a
            .duplicates()
            .unwrap()
            .into_iter()
            .chain(b.duplicates().unwrap())
            .map(TcpListener::from)
            .collect();
        let got_b = Listeners::take(&mut taken, b_addr).unwrap();
        assert_eq!((got_b.local_addr(), got_b.len()), (b_addr, 1));
        let got_a = Listeners::take(&mut taken, a_addr).unwrap();
        assert_eq!(got_a.len(), 2);
        assert!(taken.is_empty());
        assert!(Listeners::take(&mut taken, a_addr).is_none());
    }
}
