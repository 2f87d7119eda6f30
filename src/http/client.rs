//! A small HTTP/1.1 client with one kept-alive connection, for the
//! benchmark, the command-line client and the client library. It speaks
//! exactly what the API (and etcd's JSON gateway) answer: `Content-Length`
//! bodies, no chunking; over TLS when given the cluster's CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
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
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Largest response header block and body read.
pub const RESPONSE_HEADER_BYTES_MAX: usize = 16 << 10;
pub const RESPONSE_BODY_BYTES_MAX: usize = 16 << 20;
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

pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<Box<dyn Io>>>,
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

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpClientError> {
        let addr = self.addr;
        let io = |source| HttpClientError::Io { addr, source };
        if self.conn.is_none() {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| HttpClientError::Connect { addr, source })?;
            let _ = stream.set_nodelay(true);
            let stream: Box<dyn Io> = match &self.access.tls {
                None => Box::new(stream),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, stream)
                        .await
                        .map_err(|source| HttpClientError::Tls { addr, source })?;
                    Box::new(tls)
                }
            };
            self.conn = Some(BufReader::new(stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(HttpClientError::Malformed {
                addr,
                what: "no connection".into(),
            });
        };
        let auth = match &self.access.credential {
            // Printable ASCII only: a line break would smuggle a header.
            Some(c) if c.bytes().all(|b| b.is_ascii_graphic()) => {
                format!("Authorization: Bearer {c}\r\n")
            }
            Some(_) => return Err(malformed_credential(addr)),
            None => String::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.get_mut()
            .write_all(head.as_bytes())
            .await
            .map_err(io)?;
        conn.get_mut().write_all(body).await.map_err(io)?;
        let malformed = |what: &str| HttpClientError::Malformed {
            addr,
            what: what.to_string(),
        };
        let mut status = None;
        let mut length = 0usize;
        let mut close = false;
        let mut header_bytes = 0usize;
        // A TLS record (an alert: 0x15) where HTTP was expected: the node
        // speaks HTTPS and this client was not told the CA.
        if self.access.tls.is_none() && conn.fill_buf().await.map_err(io)?.first() == Some(&0x15) {
            self.conn = None;
            return Err(malformed(
                "the node speaks TLS: give the cluster's CA (--ca-file or RAFTLOCK_CA)",
            ));
        }
        loop {
            let mut line = String::new();
            let n = conn.read_line(&mut line).await.map_err(io)?;
            if n == 0 {
                return Err(malformed("connection closed mid-response"));
            }
            header_bytes += n;
            if header_bytes > RESPONSE_HEADER_BYTES_MAX {
                return Err(malformed("headers too long"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                if status.is_none() {
                    return Err(malformed("no status line"));
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v.parse().map_err(|_| malformed("bad Content-Length"))?;
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k == "transfer-encoding" {
                    return Err(malformed("chunked bodies are not supported"));
                }
            }
        }
        if length > RESPONSE_BODY_BYTES_MAX {
            return Err(malformed("body too large"));
        }
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await.map_err(io)?;
        if close {
            self.conn = None;
        }
        Ok((status.unwrap_or(0), body))
    }
}

fn malformed_credential(addr: SocketAddr) -> HttpClientError {
    HttpClientError::Malformed {
        addr,
        what: "the credential has characters a header cannot carry".into(),
    }
}
