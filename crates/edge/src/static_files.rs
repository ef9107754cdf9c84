//! berth's static file server: what static-site apps run inside their container.

use crate::EdgeError;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::PathBuf;
use tower_http::services::ServeDir;

/// Serves `dir` on `0.0.0.0:port` until the process is stopped.
pub async fn serve(dir: PathBuf, port: u16) -> Result<(), EdgeError> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = crate::server::bind(addr).await?;
    println!("serving {} on port {port}", dir.display());
    let service =
        TowerToHyperService::new(ServeDir::new(dir).append_index_html_on_directories(true));
    loop {
        let (stream, _) = listener.accept().await.map_err(|source| EdgeError::Io {
            context: "accepting a connection".into(),
            source,
        })?;
        let service = service.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
