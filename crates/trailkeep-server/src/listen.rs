//! Serving a router on a socket: plain HTTP, or HTTPS with rustls when a certificate and key are
//! configured, with graceful shutdown (stop accepting, let in-flight requests finish).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::TokioTimer;

/// How long in-flight requests may take to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate or key: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound listener, so the caller knows the address (port 0 picks a free port) before serving.
#[derive(Debug)]
pub struct Listener {
    listener: std::net::TcpListener,
    tls: Option<RustlsConfig>,
    header_timeout: Duration,
}

/// How long a client may take to send a request's headers unless configured otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

impl Listener {
    /// Binds `addr`; with `tls = Some((cert, key))` loads the PEM files now so errors show at start.
    pub async fn bind(addr: SocketAddr, tls: Option<(&Path, &Path)>) -> Result<Self, ListenError> {
        let tls = match tls {
            None => None,
            Some((cert, key)) => Some(load_tls(cert, key).await?),
        };
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ListenError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ListenError::Bind { addr, source })?;
        Ok(Listener {
            listener,
            tls,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// A client that has not sent a request's headers within `timeout` is disconnected (without
    /// it, each slow-loris connection would be held open forever).
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` until `shutdown` completes, then drains in-flight requests.
    pub async fn serve(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ListenError> {
        let handle = Handle::new();
        let trigger = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let timeout = self.header_timeout;
        // hyper enforces the header timeout only with a timer, which axum-server does not set.
        let limit_headers = |builder: &mut hyper_util::server::conn::auto::Builder<_>| {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
        };
        match self.tls {
            None => {
                let mut server = axum_server::from_tcp(self.listener).handle(handle);
                limit_headers(server.http_builder());
                server.serve(service).await.map_err(ListenError::Serve)
            }
            Some(tls) => {
                let mut server = axum_server::from_tcp_rustls(self.listener, tls).handle(handle);
                limit_headers(server.http_builder());
                server.serve(service).await.map_err(ListenError::Serve)
            }
        }
    }
}

async fn load_tls(cert: &Path, key: &Path) -> Result<RustlsConfig, ListenError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_pem(cert, "certificate")?;
    let key_pem = read_pem(key, "private key")?;
    let chain = rustls_pki_types_certs(&certs)
        .map_err(|e| ListenError::Tls(format!("{}: {e}", cert.display())))?;
    let key_der = rustls_pki_types_key(&key_pem)
        .map_err(|e| ListenError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, ListenError> {
    std::fs::read(path)
        .map_err(|e| ListenError::Tls(format!("cannot read the {what} {}: {e}", path.display())))
}

fn rustls_pki_types_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

fn rustls_pki_types_key(pem: &[u8]) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("not a PEM private key: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn serves_https_with_the_given_certificate_and_shuts_down_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

        let listener = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            Some((&cert_path, &key_path)),
        )
        .await
        .unwrap();
        assert!(listener.is_tls());
        let addr = listener.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().route("/healthz", get(|| async { "ok" }));
        let server = tokio::spawn(listener.serve(app, async {
            let _ = stopped.await;
        }));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("ok"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_missing_key_file_is_reported_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Listener::bind("127.0.0.1:0".parse().unwrap(), Some((&missing, &missing)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
