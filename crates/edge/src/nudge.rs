//! Nudges between the control plane and the edge. Each side polls a file the other writes
//! (the route snapshot, the wake requests); after writing, the writer also sends an empty
//! datagram to a Unix socket the reader listens on beside that file, so the reader looks at
//! once instead of at its next poll. The files stay the truth: a nudge that finds no one
//! listening (an older peer, a socket path too long) costs only the poll interval.

use std::path::{Path, PathBuf};

/// Where the edge listens for "the routes changed" (beside the route snapshot).
pub fn routes_socket(routes_file: &Path) -> PathBuf {
    routes_file.with_extension("nudge")
}

/// Where the control plane listens for "an app was asked to wake" (beside the wake
/// requests' directory).
pub fn wake_socket(wake_dir: &Path) -> PathBuf {
    wake_dir.with_extension("nudge")
}

/// A socket nudges arrive on.
pub struct Listener {
    socket: tokio::net::UnixDatagram,
}

impl Listener {
    /// Listens at `path`, replacing a socket an earlier process left there.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Self {
            socket: tokio::net::UnixDatagram::bind(path)?,
        })
    }

    /// The next nudge (or several at once). Never ends if the socket fails: the poll
    /// goes on.
    pub async fn next(&self) {
        let mut buf = [0u8; 16];
        if self.socket.recv(&mut buf).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Nudges whoever listens at `path`; nothing when no one does.
pub fn send(path: &Path) {
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = s.set_nonblocking(true);
        let _ = s.send_to(b"", path);
    }
}

/// Waits for a nudge on `listener` (when there is one) or `poll`, whichever comes first.
pub async fn or_poll(listener: Option<&Listener>, poll: std::time::Duration) {
    match listener {
        Some(l) => {
            tokio::select! {
                _ = l.next() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        None => tokio::time::sleep(poll).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_nudge_wakes_the_listener_before_its_poll() {
        let dir = tempfile::tempdir().unwrap();
        let path = routes_socket(&dir.path().join("routes.json"));
        let listener = Listener::bind(&path).unwrap();
        send(&path);
        let woke = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            or_poll(Some(&listener), std::time::Duration::from_secs(3600)),
        )
        .await;
        assert!(woke.is_ok(), "the nudge did not arrive");
        // No one listening: nothing happens, nothing fails.
        send(&dir.path().join("nobody.nudge"));
    }
}
