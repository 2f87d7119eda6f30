//! The client library over HTTP: the native protocol of any node's API
//! (`/API/v1/native/*`, postcard bodies), with kept-alive connections per
//! endpoint, and `Client::connect`, which asks each endpoint which node it
//! is and starts at a random one.

use super::native::NativeTransport;
use super::{Client, ClientError, Clock, Reply, Transport};
use crate::actor::{Instant, NodeId};
use crate::http::client::{Access, HttpClient};
use crate::http::NativeReply;
use crate::session::{NodeReply, ToNode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle kept-alive connections kept per endpoint.
pub const CLIENT_IDLE_CONNECTIONS_MAX: usize = 8;
/// How long `connect` waits for an endpoint to say which node it is.
pub const CLIENT_DISCOVER_TIMEOUT_MS: u64 = 2_000;

/// Idle connections to one endpoint, reused across requests.
type Pool = Arc<Mutex<Vec<HttpClient>>>;

/// Each node's HTTP address and its idle connections.
pub struct HttpTransport {
    targets: BTreeMap<NodeId, (SocketAddr, Pool)>,
    /// The credential sent with every call, and the CA trusted.
    access: Access,
}

impl HttpTransport {
    pub fn new(targets: &[(NodeId, SocketAddr)], access: Access) -> Self {
        HttpTransport {
            targets: targets
                .iter()
                .map(|&(id, addr)| (id, (addr, Pool::default())))
                .collect(),
            access,
        }
    }
}

impl Transport for HttpTransport {
    fn call(&self, to: NodeId, msg: ToNode) -> Reply {
        let Some((addr, pool)) = self.targets.get(&to) else {
            return Box::pin(async { NodeReply::Unavailable });
        };
        let (addr, pool) = (*addr, pool.clone());
        let access = self.access.clone();
        Box::pin(async move {
            let (path, body) = match msg {
                ToNode::Propose(b) => ("/API/v1/native/propose", b),
                ToNode::Read(b) => ("/API/v1/native/read", b),
                ToNode::Wait(w) => ("/API/v1/native/wait", crate::lock::encode(&w)),
            };
            let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut http = idle.unwrap_or_else(|| HttpClient::with_access(addr, &access));
            let result = http.call("POST", path, &body).await;
            if result.is_ok() {
                let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < CLIENT_IDLE_CONNECTIONS_MAX {
                    idle.push(http);
                }
            }
            match result {
                Ok((200, raw)) => match postcard::from_bytes::<NativeReply>(&raw) {
                    Ok(NativeReply::Output(o)) => NodeReply::Output(o),
                    Ok(NativeReply::NotLeader(l)) => NodeReply::NotLeader(l),
                    Ok(NativeReply::Refused(why)) => NodeReply::Refused(why),
                    _ => NodeReply::Unavailable,
                },
                // A 4xx is the node's final word on this request.
                Ok((status @ 400..=499, raw)) if status != 429 => {
                    NodeReply::Refused(format!("{status}: {}", String::from_utf8_lossy(&raw)))
                }
                _ => NodeReply::Unavailable,
            }
        })
    }
}

/// Which protocol the library speaks to the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Door {
    /// The native protocol on a persistent connection per node, where the
    /// node serves it (`native_port` in `/API/v1/cluster`); HTTP where not.
    #[default]
    Native,
    /// The native calls over HTTP (`/API/v1/native/*`), one at a time per
    /// kept-alive connection.
    Http,
}

/// How `Client::connect_with` reaches the cluster.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The credential and the cluster's CA.
    pub access: Access,
    pub door: Door,
    /// Start at the first endpoint given (a benchmark or a test that
    /// places its clients itself) rather than a random one.
    pub in_order: bool,
}

impl Client {
    /// Opens a session with `ttl` against the cluster behind `endpoints`
    /// (HTTP API addresses, any order, any subset): learns which node each
    /// is, starts at a random one, and returns once the session is open.
    /// Calls carry the credential in `RAFTLOCK_CREDENTIAL` and speak TLS
    /// trusting the CA file in `RAFTLOCK_CA`, if set (`connect_as` names
    /// both).
    pub async fn connect(
        endpoints: Vec<std::net::SocketAddr>,
        ttl: Duration,
    ) -> Result<Client, ClientError> {
        Client::connect_as(endpoints, ttl, env_access()?).await
    }

    /// `connect` with `access`: a credential (a bearer string `rlk_...`)
    /// and the cluster's CA, either or both.
    pub async fn connect_as(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
        access: Access,
    ) -> Result<Client, ClientError> {
        Client::connect_with(
            endpoints,
            ttl,
            ConnectOptions {
                access,
                ..Default::default()
            },
        )
        .await
    }

    /// `connect`, but starting at the first endpoint given (and moving on
    /// in the order given): for a benchmark or a test that places its
    /// clients itself.
    pub async fn connect_at(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
    ) -> Result<Client, ClientError> {
        let options = ConnectOptions {
            access: env_access()?,
            in_order: true,
            ..Default::default()
        };
        Client::connect_with(endpoints, ttl, options).await
    }

    /// `connect` with every choice made by the caller.
    pub async fn connect_with(
        endpoints: Vec<SocketAddr>,
        ttl: Duration,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let targets = discover(&endpoints, &options.access).await?;
        let seed = crate::entropy::random_u64().map_err(|e| ClientError::Entropy(e.to_string()))?;
        let targets = if options.in_order {
            targets
        } else {
            spread(targets, seed)
        };
        let transport: Arc<dyn Transport> = match options.door {
            Door::Native => Arc::new(NativeTransport::new(&targets, options.access)),
            Door::Http => {
                let http: Vec<(NodeId, SocketAddr)> =
                    targets.iter().map(|&(id, a, _)| (id, a)).collect();
                Arc::new(HttpTransport::new(&http, options.access))
            }
        };
        let nodes = targets.iter().map(|&(id, _, _)| id).collect();
        let origin = std::time::Instant::now();
        let clock: Clock =
            Box::new(move || Instant::from_micros(origin.elapsed().as_micros() as u64));
        Client::start(transport, nodes, ttl, clock, seed).await
    }
}

/// A node's id, HTTP address and native address (if it serves one).
type Target = (NodeId, SocketAddr, Option<SocketAddr>);

/// Asks every endpoint, at once, which node it is and where it serves the
/// native protocol (`GET /API/v1/cluster`); one that does not answer now
/// keeps a placeholder id of its own, so it is still tried in turn (over
/// HTTP). Fails only if none answers.
async fn discover(endpoints: &[SocketAddr], access: &Access) -> Result<Vec<Target>, ClientError> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, &addr) in endpoints.iter().enumerate() {
        let access = access.clone();
        asks.spawn(async move {
            let mut http = HttpClient::with_access(addr, &access);
            let ask = http.json("GET", "/API/v1/cluster", &serde_json::Value::Null);
            let limit = Duration::from_millis(CLIENT_DISCOVER_TIMEOUT_MS);
            let answer = tokio::time::timeout(limit, ask).await;
            let id = match answer {
                Ok(Ok((200, v))) => Ok(v["id"].as_u64().map(|id| {
                    let port = v["native_port"]
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok());
                    (id, port.map(|p| SocketAddr::new(addr.ip(), p)))
                })),
                Ok(Ok((status, v))) => Err(format!("{addr}: {status} {v}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{addr}: no answer in {CLIENT_DISCOVER_TIMEOUT_MS} ms"
                )),
            };
            (i, addr, id)
        });
    }
    let mut found = vec![None; endpoints.len()];
    let mut last_error = String::new();
    while let Some(Ok((i, addr, id))) = asks.join_next().await {
        let id = id.unwrap_or_else(|e| {
            last_error = e;
            None
        });
        found[i] = Some((id, addr));
    }
    if found.iter().flatten().all(|(id, _)| id.is_none()) {
        return Err(ClientError::Unreachable(last_error));
    }
    // Placeholders sit far above any real node id.
    Ok(found
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| {
            f.map(|(found, addr)| match found {
                Some((id, native)) => (id, addr, native),
                None => (u64::MAX - i as u64, addr, None),
            })
        })
        .collect())
}

/// The targets in a random rotation: the session starts at the first and
/// moves on in order, so clients spread over the cluster.
fn spread(mut targets: Vec<Target>, seed: u64) -> Vec<Target> {
    let n = targets.len().max(1);
    targets.rotate_left((seed % n as u64) as usize);
    targets
}

/// The credential and CA in `RAFTLOCK_CREDENTIAL` and `RAFTLOCK_CA`.
fn env_access() -> Result<Access, ClientError> {
    Access::from_env().map_err(|e| ClientError::Unreachable(e.to_string()))
}
