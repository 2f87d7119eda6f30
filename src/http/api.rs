use super::auth::{Bearer, Caller};
use super::error::{ApiError, ErrorBody};
use super::gateway_task::GatewayHandle;
use super::responses::{
    Appended, ClusterStatus, CreatedCredential, CredentialList, CredentialRevoked, FileContents,
    Health, HealthStatus, LeaderHandedOver, LockReleased, LockStatus, MemberJoining, MemberRemoved,
    MemberStatus, SessionClosed, SessionList, SessionOpened, SessionRenewed, SessionStatus,
};
use crate::gateway::{Answer, GatewayConfig, Request};
use crate::lock::auth::{Allow, CredentialId, Policy, Rule};
use crate::lock::{
    encode, Command, FileInfo, LockMachine, Mode, Op, Query, QueryAnswer, Reply, Response,
    SessionId,
};
use crate::runtime::Node;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Worker threads serving HTTP (the Raft actor has its own thread).
pub const HTTP_WORKERS: usize = 2;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub workers: usize,
    /// The cluster's clock-drift bound ρ (ppm), for the lease a one-lock
    /// session's answer reports (`lease_ms`); the lock machine's own.
    pub drift_ppm: u32,
    /// Every call but `/health` (and `/metrics` unless `metrics_auth`)
    /// needs a credential; false only with `--insecure`.
    pub auth_required: bool,
    /// `/metrics` needs a credential too.
    pub metrics_auth: bool,
    /// Calls per second one non-admin credential may make through this
    /// node (0: no limit); beyond, 429 with `Retry-After`.
    pub calls_per_credential_per_s: u32,
    /// Serve TLS with this (the node's certificate: `tls::api_server_config`);
    /// plain HTTP only with `--insecure`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            workers: HTTP_WORKERS,
            drift_ppm: crate::lock::DRIFT_PPM_DEFAULT,
            auth_required: true,
            metrics_auth: false,
            calls_per_credential_per_s: super::auth::CREDENTIAL_CALLS_PER_S_DEFAULT,
            tls: None,
        }
    }
}

/// The port this node serves the native protocol on, if it does.
#[derive(Clone, Copy, Debug)]
pub(super) struct NativePort(pub Option<u16>);

pub(super) type Shared = web::Data<Arc<Node<LockMachine>>>;
/// Every lock, session and file request goes through the node's request
/// layer (`crate::gateway`).
pub(super) type Gateway = web::Data<Arc<GatewayHandle>>;

/// Serves the API for `node` on `listener` until the returned server stops.
pub fn serve(
    node: Arc<Node<LockMachine>>,
    listener: std::net::TcpListener,
    config: HttpConfig,
) -> std::io::Result<actix_web::dev::Server> {
    serve_with_native(node, listener, None, config)
}

/// `serve`, and the native protocol on `native` (`super::stream`), with the
/// same request layer, TLS, credentials and rate limit.
pub fn serve_with_native(
    node: Arc<Node<LockMachine>>,
    listener: std::net::TcpListener,
    native: Option<std::net::TcpListener>,
    config: HttpConfig,
) -> std::io::Result<actix_web::dev::Server> {
    // Subscribed to the node's events here, before any request is taken.
    let gateway = GatewayHandle::start(node.clone(), GatewayConfig::new(config.drift_ppm));
    let limiter = web::Data::new(super::auth::RateLimiter::new(
        config.calls_per_credential_per_s,
    ));
    let native_port = match native {
        Some(native) => {
            let port = native.local_addr()?.port();
            let door = super::stream::Door::new(
                gateway.clone(),
                node.clone(),
                limiter.clone().into_inner(),
                config.auth_required,
                config.tls.clone(),
            );
            super::stream::start(native, Arc::new(door))?;
            Some(port)
        }
        None => None,
    };
    let native_port = web::Data::new(NativePort(native_port));
    let gateway = web::Data::new(gateway);
    let data = web::Data::new(node);
    let settings = web::Data::new(config.clone());
    let spec = web::Data::new(super::openapi::Spec(super::openapi::openapi_json()));
    let tls = config.tls.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(gateway.clone())
            .app_data(settings.clone())
            .app_data(limiter.clone())
            .app_data(native_port.clone())
            .app_data(web::PayloadConfig::new(BODY_BYTES_MAX))
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(super::metrics::metrics))
            .app_data(spec.clone())
            .route("/docs", web::get().to(super::openapi::docs_page))
            .route(
                "/docs/swagger-ui.css",
                web::get().to(super::openapi::swagger_css),
            )
            .route(
                "/docs/swagger-ui-bundle.js",
                web::get().to(super::openapi::swagger_js),
            )
            .route("/docs/init.js", web::get().to(super::openapi::init_js))
            .route("/openapi.json", web::get().to(super::openapi::spec))
            .route("/API/v1/cluster", web::get().to(cluster))
            .route("/API/v1/cluster/members", web::post().to(add_member))
            .route(
                "/API/v1/cluster/members/{id}",
                web::delete().to(remove_member),
            )
            .route("/API/v1/cluster/leader", web::post().to(transfer_leader))
            .route("/API/v1/credentials", web::post().to(create_credential))
            .route("/API/v1/credentials", web::get().to(list_credentials))
            .route(
                "/API/v1/credentials/{id}",
                web::delete().to(revoke_credential),
            )
            .route(
                "/API/v1/locks/{name:.+}",
                web::post().to(super::acquire::acquire),
            )
            .route("/API/v1/locks/{name:.+}", web::delete().to(release))
            .route("/API/v1/locks/{name:.+}", web::get().to(lock_info))
            .route("/API/v1/sessions", web::post().to(open_session))
            .route("/API/v1/sessions", web::get().to(list_sessions))
            .route("/API/v1/sessions/{id}", web::get().to(session_info))
            .route("/API/v1/sessions/{id}", web::delete().to(close_session))
            .route("/API/v1/sessions/{id}/keepalive", web::post().to(keepalive))
            .route("/API/v1/files/{name:.+}/append", web::post().to(append))
            .route("/API/v1/files/{name:.+}", web::get().to(file))
            .route(
                "/API/v1/native/propose",
                web::post().to(super::native::propose),
            )
            .route("/API/v1/native/read", web::post().to(super::native::read))
            .route("/API/v1/native/wait", web::post().to(super::native::wait))
            .default_service(web::to(not_found))
    })
    .on_connect(super::peer::remember)
    .workers(config.workers.max(1))
    .disable_signals();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, (*tls).clone())?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route; see /docs".into()))
}

// ---- wire types ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ModeName {
    Exclusive,
    Shared,
    Semaphore,
}

pub(super) fn mode_of(mode: Option<ModeName>, limit: Option<u32>) -> Result<Mode, ApiError> {
    match (mode.unwrap_or(ModeName::Exclusive), limit) {
        (ModeName::Exclusive, None) => Ok(Mode::Exclusive),
        (ModeName::Shared, None) => Ok(Mode::Shared),
        (ModeName::Semaphore, Some(n)) => Ok(Mode::Semaphore(n)),
        (ModeName::Semaphore, None) => Err(ApiError::BadRequest(
            "mode \"semaphore\" needs \"limit\"".into(),
        )),
        (_, Some(_)) => Err(ApiError::BadRequest(
            "\"limit\" goes with mode \"semaphore\" only".into(),
        )),
    }
}

// Ids and tokens in wire types are `u64`, not `SessionId`/`Token`: utoipa
// cannot see through an alias (see responses.rs).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseArgs {
    token: Option<u64>,
    session: Option<u64>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionBody {
    ttl_ms: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AppendBody {
    session: u64,
    token: u64,
    data: String,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListArgs {
    after: Option<u64>,
    limit: Option<u32>,
}

/// An empty body, or JSON `null` (what generated clients such as the
/// /docs page send for an optional body), means "all defaults"; anything
/// else must be valid JSON.
pub(super) fn parse_body<T: Default + for<'de> Deserialize<'de>>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.trim_ascii() == b"null" || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

fn parse_required<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// The fuzz check of request bodies and names (`fuzz/`, replayed by
/// `tests/fuzz_corpus.rs`): every body parser and validator the handlers
/// run, fed the same bytes, never panics, and every refusal is a 400 whose
/// body is the JSON `{"code", "message"}` clients parse.
pub fn check_request_body(data: &[u8]) {
    use actix_web::ResponseError;
    let mut refusals = Vec::new();
    match parse_body::<super::acquire::AcquireBody>(data) {
        Ok(args) => {
            if let Err(e) = mode_of(args.mode, args.limit) {
                refusals.push(e);
            }
        }
        Err(e) => refusals.push(e),
    }
    refusals.extend(parse_body::<ReleaseArgs>(data).err());
    refusals.extend(parse_body::<SessionBody>(data).err());
    refusals.extend(parse_required::<AppendBody>(data).err());
    refusals.extend(parse_required::<AddMember>(data).err());
    refusals.extend(parse_required::<Transfer>(data).err());
    refusals.extend(parse_required::<NewCredential>(data).err());
    refusals.extend(credential_id(&String::from_utf8_lossy(data)).err());
    // A bearer string parses only if it is one: what parses re-encodes to
    // the same credential.
    if let Ok(b) = super::auth::Bearer::parse(&String::from_utf8_lossy(data)) {
        assert_eq!(super::auth::Bearer::parse(&b.encode()), Ok(b));
    }
    refusals.extend(check_name(&String::from_utf8_lossy(data)).err());
    for e in refusals {
        assert_eq!(e.status_code().as_u16(), 400, "{e}");
        let body = e.body();
        assert!(
            body["code"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
}

// ---- talking to the node ----

async fn propose(
    gateway: &GatewayHandle,
    caller: Caller,
    command: &Command,
) -> Result<Reply, ApiError> {
    let request = match command {
        Command::CreateCredential { .. } | Command::RevokeCredential { .. } => {
            Request::Manage(encode(command))
        }
        _ => Request::Propose(encode(command)),
    };
    let output = match gateway.call(caller.credential, request, None).await? {
        Answer::Output(applied) => applied.output,
        other => return Err(unexpected_answer(other)),
    };
    let response: Response = postcard::from_bytes(&output)
        .map_err(|e| ApiError::Unavailable(format!("undecodable response: {e}")))?;
    Ok(response?)
}

async fn query(
    gateway: &GatewayHandle,
    caller: Caller,
    query: &Query,
) -> Result<QueryAnswer, ApiError> {
    let output = match gateway
        .call(caller.credential, Request::Read(encode(query)), None)
        .await?
    {
        Answer::Output(applied) => applied.output,
        other => return Err(unexpected_answer(other)),
    };
    match postcard::from_bytes(&output) {
        Ok(QueryAnswer::Refused(e)) => Err(e.into()),
        Ok(answer) => Ok(answer),
        Err(e) => Err(ApiError::Unavailable(format!(
            "undecodable query answer: {e}"
        ))),
    }
}

async fn request(
    gateway: &GatewayHandle,
    caller: Caller,
    session: SessionId,
    op: Op,
) -> Result<Reply, ApiError> {
    propose(gateway, caller, &Command::Unsequenced { session, op }).await
}

async fn open(gateway: &GatewayHandle, caller: Caller, ttl_ms: u64) -> Result<SessionId, ApiError> {
    // The nonce makes a retried open idempotent: from the OS's randomness,
    // so two callers (or two nodes) never share one.
    let nonce = crate::entropy::random_u64()
        .map_err(|e| ApiError::Unavailable(format!("no randomness for a session nonce: {e}")))?;
    match propose(gateway, caller, &Command::Open { nonce, ttl_ms }).await? {
        Reply::Opened { session, .. } => Ok(session),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::Unavailable(format!("unexpected reply {reply:?}"))
}

/// A gateway answer or a query answer of the wrong kind.
fn unexpected_answer(answer: impl std::fmt::Debug) -> ApiError {
    ApiError::Unavailable(format!("unexpected answer {answer:?}"))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::gateway::check_name(name).map_err(ApiError::from)
}

// ---- handlers ----

#[utoipa::path(get, path = "/health", tag = "ops", summary = "Whether this node knows a leader (no credential needed)", responses((status = 200, description = "A leader is known", body = Health), (status = 503, description = "No leader", body = Health)), security(()))]
pub(super) async fn health(node: Shared) -> Result<HttpResponse, ApiError> {
    let s = node.status().await?;
    let body = Health {
        id: s.id,
        leader: s.leader,
        role: s.role.into(),
        status: if s.leader.is_some() {
            HealthStatus::Ok
        } else {
            HealthStatus::NoLeader
        },
    };
    Ok(if s.leader.is_some() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", super::RETRY_AFTER_S.to_string()))
            .json(body)
    })
}

#[utoipa::path(get, path = "/API/v1/cluster", tag = "cluster", summary = "This node's view of the cluster: members, leader, term, indexes", responses((status = 200, description = "Cluster status", body = ClusterStatus), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn cluster(
    node: Shared,
    native: web::Data<NativePort>,
    _caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let s = node.status().await?;
    let members = s
        .membership
        .members
        .iter()
        .map(|(id, m)| MemberStatus {
            id: *id,
            peer_addr: m.addr.clone(),
            voter: m.voter,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ClusterStatus {
        applied_index: s.applied_index,
        cluster: node.cluster().name().to_owned(),
        cluster_id: format!("{:016x}", node.cluster().id()),
        commit_index: s.commit_index,
        id: s.id,
        last_index: s.last_index,
        leader: s.leader,
        members,
        native_port: native.0,
        role: s.role.into(),
        term: s.term,
    }))
}

#[utoipa::path(delete, path = "/API/v1/locks/{name}", tag = "locks", summary = "Release a held lock: token and session (query or body) prove which grant", params(("name" = String, Path, description = "Lock (or file) name, 1 to 256 bytes; may contain /"), ReleaseArgs), responses((status = 200, description = "Released", body = LockReleased), (status = 409, description = "Not the holder with that token", body = ErrorBody), (status = 410, description = "Session expired", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn release(
    gateway: Gateway,
    caller: Caller,
    name: web::Path<String>,
    args: web::Query<ReleaseArgs>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_name(&name)?;
    let from_body: ReleaseArgs = parse_body(&body)?;
    let token = args.token.or(from_body.token);
    let session = args.session.or(from_body.session);
    let (Some(token), Some(session)) = (token, session) else {
        return Err(ApiError::BadRequest(
            "release needs \"token\" and \"session\" (query or body)".into(),
        ));
    };
    let op = Op::Release {
        lock: name.clone(),
        token,
    };
    match request(&gateway, caller, session, op).await? {
        Reply::Released => Ok(HttpResponse::Ok().json(LockReleased {
            name,
            released: true,
            session,
            token,
        })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/API/v1/locks/{name}", tag = "locks", summary = "Who holds the lock, with which tokens and for how long; who waits", params(("name" = String, Path, description = "Lock (or file) name, 1 to 256 bytes; may contain /")), responses((status = 200, description = "Holders and waiters", body = LockStatus), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn lock_info(
    gateway: Gateway,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_name(&name)?;
    match query(&gateway, caller, &Query::Lock { name: name.clone() }).await? {
        QueryAnswer::Lock(info) => Ok(HttpResponse::Ok().json(LockStatus::new(&name, &info))),
        other => Err(unexpected_answer(other)),
    }
}

#[utoipa::path(post, path = "/API/v1/sessions", tag = "sessions", summary = "Open a session (owned by the calling credential)", request_body(content = Option<SessionBody>, description = "Optional TTL"), responses((status = 200, description = "Opened", body = SessionOpened), (status = 429, description = "Session limits", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn open_session(
    gateway: Gateway,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let args: SessionBody = parse_body(&body)?;
    let ttl_ms = args.ttl_ms.unwrap_or(super::TTL_MS_DEFAULT);
    let session = open(&gateway, caller, ttl_ms).await?;
    Ok(HttpResponse::Ok().json(SessionOpened { session, ttl_ms }))
}

#[utoipa::path(get, path = "/API/v1/sessions", tag = "sessions", summary = "Live sessions (a non-admin credential sees its own)", params(ListArgs), responses((status = 200, description = "Live sessions", body = SessionList), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn list_sessions(
    gateway: Gateway,
    caller: Caller,
    args: web::Query<ListArgs>,
) -> Result<HttpResponse, ApiError> {
    let q = Query::Sessions {
        after: args.after.unwrap_or(0),
        limit: args.limit.unwrap_or(crate::lock::SESSIONS_LISTED_MAX),
    };
    match query(&gateway, caller, &q).await? {
        QueryAnswer::Sessions(list) => {
            let sessions = list
                .iter()
                .map(|(id, s)| SessionStatus::new(*id, s))
                .collect();
            Ok(HttpResponse::Ok().json(SessionList { sessions }))
        }
        other => Err(unexpected_answer(other)),
    }
}

#[utoipa::path(get, path = "/API/v1/sessions/{id}", tag = "sessions", summary = "A session: TTL, held locks with tokens, waits, lease left", params(("id" = u64, Path, description = "Session id")), responses((status = 200, description = "The session", body = SessionStatus), (status = 410, description = "Closed or expired", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn session_info(
    gateway: Gateway,
    caller: Caller,
    id: web::Path<SessionId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match query(&gateway, caller, &Query::Session { session: id }).await? {
        QueryAnswer::Session(Some(s)) => Ok(HttpResponse::Ok().json(SessionStatus::new(id, &s))),
        QueryAnswer::Session(None) => Err(ApiError::Gone(id)),
        other => Err(unexpected_answer(other)),
    }
}

#[utoipa::path(post, path = "/API/v1/sessions/{id}/keepalive", tag = "sessions", summary = "Renew the session's lease", params(("id" = u64, Path, description = "Session id")), responses((status = 200, description = "Renewed", body = SessionRenewed), (status = 410, description = "Closed or expired", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn keepalive(
    gateway: Gateway,
    caller: Caller,
    id: web::Path<SessionId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match request(&gateway, caller, id, Op::KeepAlive).await? {
        Reply::Renewed => Ok(HttpResponse::Ok().json(SessionRenewed { session: id })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(delete, path = "/API/v1/sessions/{id}", tag = "sessions", summary = "Close the session: releases its locks, cancels its waits", params(("id" = u64, Path, description = "Session id")), responses((status = 200, description = "Closed", body = SessionClosed), (status = 410, description = "Already gone", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn close_session(
    gateway: Gateway,
    caller: Caller,
    id: web::Path<SessionId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match request(&gateway, caller, id, Op::Close).await? {
        Reply::Closed => Ok(HttpResponse::Ok().json(SessionClosed {
            closed: true,
            session: id,
        })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(post, path = "/API/v1/files/{name}/append", tag = "files", summary = "Append to the fenced file guarded by the lock of the same name (current exclusive holder's token only)", params(("name" = String, Path, description = "Lock (or file) name, 1 to 256 bytes; may contain /")), request_body = AppendBody, responses((status = 200, description = "Appended", body = Appended), (status = 409, description = "Stale token", body = ErrorBody), (status = 413, description = "File full", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn append(
    gateway: Gateway,
    caller: Caller,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_name(&name)?;
    let args: AppendBody = parse_required(&body)?;
    let op = Op::Append {
        file: name.clone(),
        token: args.token,
        data: args.data.into_bytes(),
    };
    match request(&gateway, caller, args.session, op).await? {
        Reply::Appended { offset } => Ok(HttpResponse::Ok().json(Appended {
            name,
            offset,
            token: args.token,
        })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/API/v1/files/{name}", tag = "files", summary = "Read a fenced file and the highest token that appended", params(("name" = String, Path, description = "Lock (or file) name, 1 to 256 bytes; may contain /")), responses((status = 200, description = "The file", body = FileContents), (status = 404, description = "No such file", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn file(
    gateway: Gateway,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    check_name(&name)?;
    match query(&gateway, caller, &Query::File { name: name.clone() }).await? {
        QueryAnswer::File(Some(FileInfo { token, data })) => {
            Ok(HttpResponse::Ok().json(FileContents {
                data: String::from_utf8_lossy(&data).into_owned(),
                name,
                token,
            }))
        }
        QueryAnswer::File(None) => Err(ApiError::NotFound(format!("no file {name}"))),
        other => Err(unexpected_answer(other)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMember {
    id: u64,
    peer_addr: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Transfer {
    to: u64,
}

/// Admin calls go to the leader: anything else says where it is (421).
async fn leader_only(node: &Node<LockMachine>) -> Result<(), ApiError> {
    let s = node.status().await?;
    if s.role != crate::raft::Role::Leader {
        return Err(ApiError::NotLeader(s.leader));
    }
    Ok(())
}

fn admin_error(e: crate::runtime::NodeError) -> ApiError {
    use crate::raft::RequestError;
    use crate::runtime::NodeError;
    match e {
        NodeError::Rejected(RequestError::NotLeader { leader }) => ApiError::NotLeader(leader),
        NodeError::Rejected(
            e @ (RequestError::Membership(_)
            | RequestError::UnknownNode(_)
            | RequestError::NotCaughtUp(_)
            | RequestError::TransferFailed),
        ) => ApiError::Conflict(e.to_string()),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/API/v1/cluster/members", tag = "cluster", summary = "Admit a node as a learner, promoted once caught up (admin; leader only)", request_body = AddMember, responses((status = 202, description = "Joining", body = MemberJoining), (status = 421, description = "Not the leader", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn add_member(
    node: Shared,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let m: AddMember = parse_required(&body)?;
    if m.id == 0 {
        return Err(ApiError::BadRequest("node id 0 is reserved".into()));
    }
    m.peer_addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| ApiError::BadRequest(format!("peer_addr {}: {e}", m.peer_addr)))?;
    leader_only(&node).await?;
    node.admit(m.id, m.peer_addr.clone());
    Ok(HttpResponse::Accepted().json(MemberJoining {
        id: m.id,
        peer_addr: m.peer_addr,
        status: "joining as a learner; promoted to voter once caught up".into(),
    }))
}

#[utoipa::path(delete, path = "/API/v1/cluster/members/{id}", tag = "cluster", summary = "Remove a node (admin; leader only)", params(("id" = u64, Path, description = "Node id")), responses((status = 200, description = "Removed", body = MemberRemoved), (status = 421, description = "Not the leader", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn remove_member(
    node: Shared,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = id.into_inner();
    leader_only(&node).await?;
    let change = crate::raft::ConfChange::Remove { id };
    let applied = node.change_membership(change).await.map_err(admin_error)?;
    Ok(HttpResponse::Ok().json(MemberRemoved {
        index: applied.index,
        removed: id,
    }))
}

#[utoipa::path(post, path = "/API/v1/cluster/leader", tag = "cluster", summary = "Hand leadership to another voter (admin; leader only)", request_body = Transfer, responses((status = 200, description = "Handed over", body = LeaderHandedOver), (status = 421, description = "Not the leader", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn transfer_leader(
    node: Shared,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let t: Transfer = parse_required(&body)?;
    leader_only(&node).await?;
    node.transfer_leadership(t.to).await.map_err(admin_error)?;
    Ok(HttpResponse::Ok().json(LeaderHandedOver {
        status: "handed over".into(),
        to: t.to,
    }))
}

// ---- credentials (admin) ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCredential {
    name: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    rules: Vec<RuleBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleBody {
    prefix: String,
    allow: Vec<AllowName>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum AllowName {
    Acquire,
    Status,
    Append,
    Read,
}

fn policy_of(body: &NewCredential) -> Policy {
    let rules = body
        .rules
        .iter()
        .map(|r| {
            let mut allow = Allow::default();
            for a in &r.allow {
                match a {
                    AllowName::Acquire => allow.acquire = true,
                    AllowName::Status => allow.status = true,
                    AllowName::Append => allow.append = true,
                    AllowName::Read => allow.read = true,
                }
            }
            Rule {
                prefix: r.prefix.clone(),
                allow,
            }
        })
        .collect();
    Policy {
        admin: body.admin,
        rules,
    }
}

fn credential_id(s: &str) -> Result<CredentialId, ApiError> {
    CredentialId::from_str_radix(s, 16)
        .map_err(|_| ApiError::BadRequest(format!("{s:?} is not a credential id (16 hex digits)")))
}

/// Creates a credential; its bearer string is in this answer only.
#[utoipa::path(post, path = "/API/v1/credentials", tag = "credentials", summary = "Create a credential (admin); its bearer string is in this answer only", request_body = NewCredential, responses((status = 200, description = "Created", body = CreatedCredential), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn create_credential(
    gateway: Gateway,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let body: NewCredential = parse_required(&body)?;
    let policy = policy_of(&body);
    let bearer = Bearer::generate()
        .map_err(|e| ApiError::Unavailable(format!("no randomness for a credential: {e}")))?;
    let command = Command::CreateCredential {
        id: bearer.id,
        name: body.name.clone(),
        hash: bearer.hash(),
        policy: policy.clone(),
    };
    match propose(&gateway, caller, &command).await? {
        Reply::CredentialCreated { id } => Ok(HttpResponse::Ok().json(CreatedCredential {
            credential: bearer.encode(),
            id: format!("{id:016x}"),
            name: body.name,
            policy: (&policy).into(),
        })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/API/v1/credentials", tag = "credentials", summary = "List credentials (admin): ids, names, policies, never secrets", responses((status = 200, description = "Credentials", body = CredentialList), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn list_credentials(
    gateway: Gateway,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    match query(&gateway, caller, &Query::Credentials).await? {
        QueryAnswer::Credentials(list) => {
            let credentials = list.iter().map(Into::into).collect();
            Ok(HttpResponse::Ok().json(CredentialList { credentials }))
        }
        other => Err(unexpected_answer(other)),
    }
}

#[utoipa::path(delete, path = "/API/v1/credentials/{id}", tag = "credentials", summary = "Revoke a credential (admin): refused on every node from the entry that commits this", params(("id" = String, Path, description = "Credential id, 16 hex digits")), responses((status = 200, description = "Revoked", body = CredentialRevoked), (status = 404, description = "No such credential", body = ErrorBody), (status = 400, description = "Malformed input", body = ErrorBody), (status = 401, description = "No valid credential", body = ErrorBody), (status = 403, description = "Not allowed to this credential", body = ErrorBody), (status = 503, description = "No leader; retry", body = ErrorBody)))]
pub(super) async fn revoke_credential(
    gateway: Gateway,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let id = credential_id(&id)?;
    match propose(&gateway, caller, &Command::RevokeCredential { id }).await? {
        Reply::CredentialRevoked => Ok(HttpResponse::Ok().json(CredentialRevoked {
            id: format!("{id:016x}"),
            revoked: true,
        })),
        other => Err(unexpected(other)),
    }
}
