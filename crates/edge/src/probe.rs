//! Blackbox probes: one request to a public URL of an app, sent to the edge from outside
//! the app's network as a client would send it, timed; over HTTPS the certificate served
//! for the name is read for its expiry. (The certificate is read, not judged: whether a
//! client trusts it depends on the client.)

use crate::certs::facts_der;
pub use berth_core::api::ProbeResult;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts any certificate: the probe reports what is served, it does not judge it.
#[derive(Debug)]
struct ReadOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => tokio_rustls::TlsConnector::from(Arc::new(c)),
        // The ring provider supports the default versions; this cannot happen.
        Err(_) => tokio_rustls::TlsConnector::from(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )),
    }
}

/// Reads an HTTP/1.1 answer's status from its head.
async fn status_of(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<u16, String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before an answer".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 * 1024 {
            return Err("no status line in the first 16 KiB".into());
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })
}

/// Sends `GET path` for `host` to the edge at `addr` (over TLS when `tls`), within
/// `timeout`.
pub async fn probe(
    addr: SocketAddr,
    host: &str,
    path: &str,
    tls: bool,
    timeout: Duration,
) -> ProbeResult {
    let port_suffix = match (tls, addr.port()) {
        (true, 443) | (false, 80) => String::new(),
        (_, p) => format!(":{p}"),
    };
    let url = format!(
        "{}://{host}{port_suffix}{path}",
        if tls { "https" } else { "http" }
    );
    let started = Instant::now();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if !tls {
            let mut tcp = tcp;
            tcp.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            return status_of(&mut tcp).await.map(|s| (s, None));
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let mut stream = tls_connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let expires = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| facts_der(leaf).ok())
            .map(|f| f.not_after);
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        status_of(&mut stream).await.map(|s| (s, expires))
    };
    let outcome = tokio::time::timeout(timeout, exchange).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, error, tls_expires_at) = match outcome {
        Ok(Ok((status, expires))) => (Some(status), None, expires),
        Ok(Err(e)) => (None, Some(e), None),
        Err(_) => (
            None,
            Some(format!("no answer within {} s", timeout.as_secs())),
            None,
        ),
    };
    ProbeResult {
        at: crate::now_millis() / 1000,
        url,
        status,
        latency_ms,
        error,
        tls_expires_at,
    }
}
