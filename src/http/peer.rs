//! Whether the client of a request is still there. actix-web does not drop
//! a handler when its client disconnects (actix/actix-web#3462), so a
//! request that waits (an acquire in a lock's queue, a native wait) looks
//! for itself: the connection's socket is recorded when it is accepted,
//! and a wait peeks at it now and then. A peer that closed its end reads
//! as end-of-file; one that sent more (a pipelined request) is still there.

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};

/// How often a waiting request looks whether its client is still there.
pub const PEER_CHECK_MS: u64 = 200;

/// The socket of a request's connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerSocket(RawFd);

/// `HttpServer::on_connect` hook: remembers each connection's socket (plain
/// TCP, or under TLS) in its extensions.
pub fn remember(conn: &dyn Any, ext: &mut Extensions) {
    type Tcp = actix_web::rt::net::TcpStream;
    if let Some(tcp) = conn.downcast_ref::<Tcp>() {
        ext.insert(PeerSocket(tcp.as_raw_fd()));
    } else if let Some(tls) = conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<Tcp>>()
    {
        let (tcp, session) = tls.get_ref();
        ext.insert(PeerSocket(tcp.as_raw_fd()));
        // A client certificate (verified against the cluster's CA in the
        // handshake) that names a credential.
        let named = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::tls::credential_of);
        if let Some(id) = named {
            ext.insert(ClientCert(id));
        }
    }
}

/// The credential a connection's client certificate names.
#[derive(Clone, Copy, Debug)]
pub struct ClientCert(pub crate::lock::auth::CredentialId);

impl PeerSocket {
    pub fn of(req: &HttpRequest) -> Option<PeerSocket> {
        req.conn_data::<PeerSocket>().copied()
    }

    /// True once the peer has closed its end (or reset the connection).
    /// The connection is open while its request is being handled, so the
    /// descriptor is still this connection's.
    pub fn gone(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv(2) with MSG_PEEK | MSG_DONTWAIT into one byte we own,
        // on a socket actix keeps open while this request is handled.
        let n = unsafe {
            libc::recv(
                self.0,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return true;
        }
        if n < 0 {
            let err = std::io::Error::last_os_error().raw_os_error();
            return !matches!(err, Some(libc::EAGAIN) | Some(libc::EINTR));
        }
        false
    }
}
