//! The HTTP client of the benchmark, the command-line client and the client
//! library: one kept-alive HTTP/1.1 connection (hyper) to one endpoint,
//! over TLS when given the cluster's CA, with the caller's credential on
//! every request. Callers pool these (the library keeps idle ones per
//! endpoint).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The environment variable naming the CA file clients trust the nodes'
/// HTTPS by (`raftlock dev`: raftlock-dev/certs/ca.pem).
pub const CA_ENV: &str = "RAFTLOCK_CA";
/// A client certificate and its key (`raftlock certs create-client`),
/// presented instead of a bearer credential.
pub const CLIENT_CERT_ENV: &str = "RAFTLOCK_CLIENT_CERT";
pub const CLIENT_KEY_ENV: &str = "RAFTLOCK_CLIENT_KEY";

/// What a client presents and whom it trusts: its bearer credential, and
/// the cluster's CA (None: plain HTTP, for `--insecure` nodes).
#[derive(Clone, Default)]
pub struct Access {
    pub credential: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Access(credential: {}, tls: {})",
            self.credential.is_some(),
            self.tls.is_some()
        )
    }
}

impl Access {
    /// `credential` (empty counts as none), trusting the CA in `ca_file`,
    /// presenting the client certificate `client` (cert, key) if given.
    pub fn new(
        credential: Option<String>,
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<Access, crate::tls::TlsError> {
        let tls = ca_file
            .map(|ca| crate::tls::api_client_config(ca, client))
            .transpose()?;
        Ok(Access {
            credential: credential
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            tls,
        })
    }

    /// From `RAFTLOCK_CREDENTIAL`, `RAFTLOCK_CA`, and `RAFTLOCK_CLIENT_CERT`
    /// with `RAFTLOCK_CLIENT_KEY`.
    pub fn from_env() -> Result<Access, crate::tls::TlsError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let ca = var(CA_ENV);
        let (cert, key) = (var(CLIENT_CERT_ENV), var(CLIENT_KEY_ENV));
        let client = cert
            .as_deref()
            .zip(key.as_deref())
            .map(|(c, k)| (Path::new(c), Path::new(k)));
        Access::new(
            std::env::var(super::auth::CREDENTIAL_ENV).ok(),
            ca.as_deref().map(Path::new),
            client,
        )
    }
}

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Largest response header block and body read.
pub const RESPONSE_HEADER_BYTES_MAX: usize = 16 << 10;
pub const RESPONSE_BODY_BYTES_MAX: usize = 16 << 20;
/// hyper's read buffer, which bounds a response's head: at least its
/// minimum (8 KiB + 1), and `RESPONSE_HEADER_BYTES_MAX` otherwise.
const READ_BUFFER_BYTES: usize = RESPONSE_HEADER_BYTES_MAX;
/// How long one exchange may take.
pub const EXCHANGE_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Error)]
pub enum HttpClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O with {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} sent a malformed response: {what}")]
    Malformed { addr: SocketAddr, what: String },
    #[error("{addr} did not answer within {EXCHANGE_TIMEOUT_MS} ms")]
    Timeout { addr: SocketAddr },
    #[error("TLS with {addr}: {source} (is it the cluster's CA, and does the node's certificate name {addr}'s address? `raftlock certs create-node --host`)")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A connection to `addr`: TCP without Nagle, inside TLS if `access`
/// names a CA (the node's certificate must name `addr`'s IP).
pub async fn open_stream(
    addr: SocketAddr,
    access: &Access,
) -> Result<Box<dyn Io>, HttpClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpClientError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(match &access.tls {
        None => Box::new(stream),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, stream)
                .await
                .map_err(|source| HttpClientError::Tls { addr, source })?;
            Box::new(tls)
        }
    })
}

pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<SendRequest<Full<Bytes>>>,
    access: Access,
}

impl HttpClient {
    /// Plain HTTP, no credential (etcd's gateway, `--insecure` nodes).
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient::with_access(addr, &Access::default())
    }

    /// Sends `access`'s credential with every request, over TLS if it
    /// names a CA.
    pub fn with_access(addr: SocketAddr, access: &Access) -> Self {
        HttpClient {
            addr,
            conn: None,
            access: access.clone(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One request; reconnects once if the kept-alive connection was closed.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpClientError> {
        let addr = self.addr;
        let fresh = self.conn.is_none();
        match tokio::time::timeout(
            Duration::from_millis(EXCHANGE_TIMEOUT_MS),
            self.exchange(method, path, body),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) if !fresh => {
                // The server may have closed an idle connection: once more.
                self.conn = None;
                self.exchange(method, path, body).await
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(HttpClientError::Timeout { addr })
            }
        }
    }

    /// `call` with a JSON body, answer parsed as JSON (Null if empty).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), HttpClientError> {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, raw) = self.call(method, path, &bytes).await?;
        let value = if raw.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&raw).map_err(|e| HttpClientError::Malformed {
                addr: self.addr,
                what: format!("body is not JSON: {e}"),
            })?
        };
        Ok((status, value))
    }

    /// A new connection: TCP, TLS if configured, then hyper's HTTP/1.1
    /// handshake; the connection's task runs until the server closes it.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpClientError> {
        let stream = open_stream(self.addr, &self.access).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER_BYTES)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| self.malformed(&e))?;
        tokio::spawn(async move {
            // Ends when either side closes; errors surface on the sender.
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpClientError> {
        let addr = self.addr;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(c) = &self.access.credential {
            // Printable ASCII only: a line break would smuggle a header.
            if !c.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(malformed_credential(addr));
            }
            // Never in plain text over a network: whoever saw it could use it.
            if self.access.tls.is_none() && !addr.ip().is_loopback() {
                return Err(HttpClientError::Malformed {
                    addr,
                    what: "refusing to send a credential in plain text off this machine: give the cluster's CA (--ca-file or RAFTLOCK_CA)".into(),
                });
            }
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {c}"));
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| HttpClientError::Malformed {
                addr,
                what: format!("the request: {e}"),
            })?;
        let mut sender = match self.conn.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| self.malformed(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.malformed(&e))?;
        let status = response.status().as_u16();
        let keep = !response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = Limited::new(response.into_body(), RESPONSE_BODY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| HttpClientError::Malformed {
                addr,
                what: format!("body: {e}"),
            })?
            .to_bytes()
            .to_vec();
        if keep {
            self.conn = Some(sender);
        }
        Ok((status, body))
    }

    /// hyper's error, with a hint when a plain client meets a TLS node.
    fn malformed(&self, e: &hyper::Error) -> HttpClientError {
        let what = if self.access.tls.is_none() && e.is_parse() {
            format!("{e}: the answer is not HTTP; if the node speaks TLS, give the cluster's CA (--ca-file or RAFTLOCK_CA)")
        } else {
            e.to_string()
        };
        HttpClientError::Malformed {
            addr: self.addr,
            what,
        }
    }
}

fn malformed_credential(addr: SocketAddr) -> HttpClientError {
    HttpClientError::Malformed {
        addr,
        what: "the credential has characters a header cannot carry".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_credential_never_leaves_the_machine_in_plain_text() {
        let access = Access::new(Some("rlk_x".into()), None, None).unwrap();
        // A documentation address: nothing listens, nothing is sent.
        let far = SocketAddr::from(([192, 0, 2, 1], 7201));
        let mut client = HttpClient::with_access(far, &access);
        let e = client
            .call("GET", "/API/v1/cluster", b"")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("plain text"), "{e}");
        assert!(client.conn.is_none(), "no connection was made");
        let bad = Access::new(Some("rlk_\r\nX-Evil: 1".into()), None, None).unwrap();
        let mut client = HttpClient::with_access(SocketAddr::from(([127, 0, 0, 1], 1)), &bad);
        let e = client.call("GET", "/", b"").await.unwrap_err();
        assert!(e.to_string().contains("header cannot carry"), "{e}");
    }
}
