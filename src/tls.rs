//! Mutual TLS between peers, and the certificates it rests on.
//!
//! Every node holds a certificate from the cluster's CA whose names are
//! `node-<id>.raftlock` (its identity) and `member.raftlock` (what a node
//! that joins through an address, not yet knowing the id behind it, asks
//! for). A connection is accepted only with a certificate from that CA,
//! and every frame on it must come from the node the certificate names
//! (`PeerTls::sent_by`): a node cannot speak for another, and a process
//! without a certificate is not heard at all. Outbound, a node dials a
//! peer by id and accepts only that id's certificate.
//!
//! `raftlock certs` makes the files (`create_ca`, `create_node`), with
//! rcgen, ECDSA P-256 keys, written 0600.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

use crate::actor::NodeId;

/// The name every member's certificate carries besides its own.
pub const MEMBER_NAME: &str = "member.raftlock";
/// A CA certificate is valid this long from its creation.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// A node certificate is valid this long from its creation.
pub const NODE_VALIDITY_DAYS: i64 = 825;
/// The CA's common name (a node certificate's issuer).
const CA_COMMON_NAME: &str = "raftlock cluster CA";

/// The name that identifies node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.raftlock")
}

/// The files of a certificates directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}
pub fn node_cert_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.pem"))
}
pub fn node_key_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.key"))
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: String },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} already exists; remove it first to make a new one")]
    Exists { path: PathBuf },
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The node's own certificate fails the check its peers will make.
    #[error("the certificate {path} is not usable for node {id}: {error}")]
    Unusable {
        path: PathBuf,
        id: NodeId,
        error: String,
    },
}

/// A node's peer TLS: what it presents, and whom it accepts.
pub struct PeerTls {
    pub id: NodeId,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerTls(node {})", self.id)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// Fails if any of `paths` exists: a command writes all its files or none.
fn all_absent(paths: &[&Path]) -> Result<(), TlsError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(TlsError::Exists {
            path: p.to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn make_dir(dir: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| TlsError::Write {
            path: dir.to_path_buf(),
            error: e.to_string(),
        })
}

impl PeerTls {
    /// Loads node `id`'s material from a certificates directory, and
    /// checks it as a peer will: a certificate the CA signed, in date, for
    /// this node's name. A bad file is a clear error at start-up, not a
    /// refused connection later.
    pub fn load(dir: &Path, id: NodeId) -> Result<PeerTls, TlsError> {
        if id == 0 {
            return Err(TlsError::Config("node id 0 is reserved".into()));
        }
        let ca_path = ca_cert_path(dir);
        let ca = certs(&ca_path)?;
        let cert_path = node_cert_path(dir, id);
        let chain = certs(&cert_path)?;
        let key = key(&node_key_path(dir, id))?;
        PeerTls::from_parts(ca, chain, key, id).map_err(|error| TlsError::Unusable {
            path: cert_path,
            id,
            error,
        })
    }

    /// The same from material in memory, checked the same way.
    fn from_parts(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        id: NodeId,
    ) -> Result<PeerTls, String> {
        let config_error = |e: &dyn std::fmt::Display| e.to_string();
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| format!("the CA certificate: {e}"))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| config_error(&e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the certificate and its key: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the certificate and its key: {e}"))?;
        let tls = PeerTls {
            id,
            server: Arc::new(server),
            client: Arc::new(client),
        };
        tls.self_check()?;
        Ok(tls)
    }

    /// A handshake with itself, in memory: the peers' checks (chain,
    /// dates, name) run on this node's own certificate.
    fn self_check(&self) -> Result<(), String> {
        let name = ServerName::try_from(node_name(self.id)).map_err(|e| e.to_string())?;
        let mut client =
            rustls::ClientConnection::new(self.client.clone(), name).map_err(|e| e.to_string())?;
        let mut server =
            rustls::ServerConnection::new(self.server.clone()).map_err(|e| e.to_string())?;
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
            server
                .read_tls(&mut buf.as_slice())
                .map_err(|e| e.to_string())?;
            server.process_new_packets().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
            client
                .read_tls(&mut buf.as_slice())
                .map_err(|e| e.to_string())?;
            client.process_new_packets().map_err(|e| e.to_string())?;
        }
        Err("the handshake did not finish".into())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The name to ask of the node dialled as `peer` (0: whichever member
    /// answers at a join address).
    pub fn server_name(peer: NodeId) -> Result<ServerName<'static>, TlsError> {
        let name = match peer {
            0 => MEMBER_NAME.to_string(),
            id => node_name(id),
        };
        ServerName::try_from(name).map_err(config_error)
    }

    /// Whether the certificate a peer presented names node `id`.
    pub fn sent_by(cert: &CertificateDer<'_>, id: NodeId) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(node_name(id)) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }
}

/// Writes `contents` to a new file only its owner can read.
fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| TlsError::Write {
        path: path.to_path_buf(),
        error: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::Exists {
                path: path.to_path_buf(),
            },
            _ => err(e),
        })?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn generate_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn validity(params: &mut rcgen::CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A day's slack for clocks behind this one.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    Ok(params)
}

/// Makes a new CA in `dir` (`ca.pem`, and `ca.key` which signs node
/// certificates: keep it off the nodes in production).
pub fn create_ca(dir: &Path) -> Result<(), TlsError> {
    make_dir(dir)?;
    all_absent(&[&ca_key_path(dir), &ca_cert_path(dir)])?;
    let key = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = ca_params()?.self_signed(&key).map_err(generate_error)?;
    write_private(&ca_key_path(dir), &key.serialize_pem())?;
    write_private(&ca_cert_path(dir), &cert.pem())
}

/// The hosts a node certificate names for its HTTP API when none are
/// given: what `raftlock dev` and a local cluster are dialled by.
pub const API_HOSTS_DEFAULT: [&str; 2] = ["localhost", "127.0.0.1"];

/// Makes node `id`'s certificate and key in `dir`, signed by the CA there,
/// and checks them against `ca.pem` as a peer will before writing them: a
/// `ca.key` that is not `ca.pem`'s, or a `ca.pem` from another tool whose
/// name differs, is an error here, not at the node's start. `hosts` (IP
/// addresses or DNS names) are the names clients of its HTTP API dial it
/// by, and must find in its certificate.
pub fn create_node(dir: &Path, id: NodeId, hosts: &[String]) -> Result<(), TlsError> {
    if id == 0 {
        return Err(TlsError::Generate("node id 0 is reserved".into()));
    }
    let (cert_path, key_path) = (node_cert_path(dir, id), node_key_path(dir, id));
    all_absent(&[&cert_path, &key_path])?;
    let ca = certs(&ca_cert_path(dir))?;
    let ca_key_pem = String::from_utf8(read(&ca_key_path(dir))?).map_err(generate_error)?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(generate_error)?;
    // The issuer as rcgen needs it: the same name and key as `ca.pem`.
    let issuer = ca_params()?.self_signed(&ca_key).map_err(generate_error)?;
    let mut params = rcgen::CertificateParams::new(vec![node_name(id), MEMBER_NAME.to_string()])
        .map_err(generate_error)?;
    for host in hosts {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(|e| TlsError::Generate(format!("host {host:?}: {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_name(id));
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, NODE_VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(generate_error)?;
    let der =
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).map_err(generate_error)?;
    PeerTls::from_parts(ca, vec![cert.der().clone()], der, id).map_err(|error| {
        TlsError::Generate(format!(
            "the new certificate does not verify against {} (is ca.key that CA's key, and was ca.pem made by `raftlock certs create-ca`?): {error}",
            ca_cert_path(dir).display()
        ))
    })?;
    write_private(&key_path, &key.serialize_pem())?;
    write_private(&cert_path, &cert.pem())
}

/// The HTTP API's TLS: node `id`'s certificate (checked as `PeerTls::load`
/// checks it). A client may present a certificate from the cluster's CA
/// (`create_client`) instead of a bearer credential; one from another CA
/// fails the handshake, and none at all is fine (a bearer then).
pub fn api_server_config(dir: &Path, id: NodeId) -> Result<Arc<ServerConfig>, TlsError> {
    PeerTls::load(dir, id)?;
    let chain = certs(&node_cert_path(dir, id))?;
    let key = key(&node_key_path(dir, id))?;
    let roots = Arc::new(root_store(&ca_cert_path(dir))?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(config_error)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    Ok(Arc::new(config))
}

fn root_store(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_file)? {
        roots.add(c).map_err(|e| TlsError::Read {
            path: ca_file.to_path_buf(),
            error: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What a client of the HTTP API trusts (the cluster's CA in `ca_file`),
/// and the client certificate it presents, if any (`(cert, key)` files
/// from `create_client`).
pub fn api_client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(root_store(ca_file)?);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| TlsError::Unusable {
                path: cert.to_path_buf(),
                id: 0,
                error: e.to_string(),
            })?,
    };
    Ok(Arc::new(config))
}

/// The name a client certificate carries for credential `id`.
pub fn credential_cert_name(id: u64) -> String {
    format!("credential-{id:016x}.raftlock")
}

pub fn client_cert_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("client-{id:016x}.pem"))
}
pub fn client_key_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("client-{id:016x}.key"))
}

/// The credential a client certificate (already verified against the CA
/// by the handshake) speaks for: the id in its `credential-<id>.raftlock`
/// name, if it has one. Node certificates have none.
pub fn credential_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let id = parsed.valid_dns_names().find_map(|name| {
        let hex = name
            .strip_prefix("credential-")?
            .strip_suffix(".raftlock")?;
        (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
    })?;
    let name = ServerName::try_from(credential_cert_name(id)).ok()?;
    parsed.verify_is_valid_for_subject_name(&name).ok()?;
    Some(id)
}

/// A client certificate and key for credential `id` (client-<id>.pem and
/// .key), signed by the CA in `dir`: it authenticates as that credential
/// wherever the credential exists, and stops when it is revoked.
pub fn create_client(dir: &Path, id: u64) -> Result<(), TlsError> {
    let (cert_path, key_path) = (client_cert_path(dir, id), client_key_path(dir, id));
    all_absent(&[&cert_path, &key_path])?;
    let ca_key_pem = String::from_utf8(read(&ca_key_path(dir))?).map_err(generate_error)?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(generate_error)?;
    let issuer = ca_params()?.self_signed(&ca_key).map_err(generate_error)?;
    let mut params =
        rcgen::CertificateParams::new(vec![credential_cert_name(id)]).map_err(generate_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, credential_cert_name(id));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, NODE_VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(generate_error)?;
    if credential_of(cert.der()) != Some(id) {
        return Err(TlsError::Generate(
            "the new certificate does not name its credential".into(),
        ));
    }
    write_private(&key_path, &key.serialize_pem())?;
    write_private(&cert_path, &cert.pem())
}

/// The certificate paths a peer's (or an API client's) bytes reach, for
/// the `peer_cert` fuzz target: the first byte is a node id, the rest a
/// certificate as PEM (what `PeerTls::load` reads) or DER (what a
/// handshake hands over). Never a panic, and a certificate names a node or
/// a credential only if it parses.
pub fn check_peer_cert(data: &[u8]) {
    let Some((&id, rest)) = data.split_first() else {
        return;
    };
    let id = NodeId::from(id);
    let der = CertificateDer::from(rest.to_vec());
    let parses = webpki::EndEntityCert::try_from(&der).is_ok();
    assert!(parses || !PeerTls::sent_by(&der, id));
    // The HTTP API reads a client certificate's credential the same way.
    assert!(parses || credential_of(&der).is_none());
    for cert in CertificateDer::pem_slice_iter(rest).flatten() {
        let _ = PeerTls::sent_by(&cert, id);
        let _ = credential_of(&cert);
    }
    let _ = PrivateKeyDer::from_pem_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node certificate out of date is refused at start-up, saying so,
    /// not by every peer later.
    #[test]
    fn an_expired_node_certificate_stops_start_up_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        let ca_key_pem = std::fs::read_to_string(ca_key_path(dir.path())).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
        let issuer = ca_params().unwrap().self_signed(&ca_key).unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec![node_name(1), MEMBER_NAME.to_string()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer, &ca_key).unwrap();
        write_private(&node_key_path(dir.path(), 1), &key.serialize_pem()).unwrap();
        write_private(&node_cert_path(dir.path(), 1), &cert.pem()).unwrap();
        let e = PeerTls::load(dir.path(), 1).unwrap_err().to_string();
        assert!(
            e.contains("node-1.pem") && e.to_lowercase().contains("expired"),
            "{e}"
        );
        assert!(api_server_config(dir.path(), 1).is_err());
        // A fresh one from the same CA is fine.
        std::fs::remove_file(node_key_path(dir.path(), 1)).unwrap();
        std::fs::remove_file(node_cert_path(dir.path(), 1)).unwrap();
        create_node(dir.path(), 1, &[]).unwrap();
        assert!(PeerTls::load(dir.path(), 1).is_ok());
    }

    #[test]
    fn a_client_certificate_names_its_credential_and_no_node() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        create_client(dir.path(), 0xabc).unwrap();
        let cert = certs(&client_cert_path(dir.path(), 0xabc)).unwrap();
        assert_eq!(credential_of(&cert[0]), Some(0xabc));
        assert!(!PeerTls::sent_by(&cert[0], 1));
        create_node(dir.path(), 1, &[]).unwrap();
        let node = certs(&node_cert_path(dir.path(), 1)).unwrap();
        assert_eq!(credential_of(&node[0]), None);
        assert!(
            create_client(dir.path(), 0xabc).is_err(),
            "never overwrites"
        );
    }
}
