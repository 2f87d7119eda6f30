//! The client subcommands of the `raftlock` binary: `lock` (hold a lock
//! while a command runs), `acquire`, `release`, `status`, `sessions`,
//! `cluster status`. They talk to the HTTP API of any node.

use clap::{Args, Subcommand};
use raftlock::client::{Client, ClientError};
use raftlock::http::client::{Access, HttpClient};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the cluster refused (409, 404, 410...).
const EXIT_REFUSED: u8 = 1;
/// Exit status when `lock` lost its lock and killed the command.
const EXIT_LOST: u8 = 3;
/// Exit status when `lock` was interrupted (SIGINT or SIGTERM) and stopped
/// the command.
const EXIT_INTERRUPTED: u8 = 130;
/// How often `lock` looks whether the command's process group is gone.
const GROUP_POLL_MS: u64 = 20;

#[derive(Args, Clone)]
pub struct Endpoints {
    /// HTTP API addresses of the cluster's nodes; any one answers.
    #[arg(
        long,
        env = "RAFTLOCK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203",
        global = true
    )]
    pub endpoints: Vec<SocketAddr>,
    /// The credential (bearer string `rlk_...`) sent with every call:
    /// `raftlock dev` writes one to raftlock-dev/admin.token.
    #[arg(
        long,
        env = "RAFTLOCK_CREDENTIAL",
        hide_env_values = true,
        global = true
    )]
    pub credential: Option<String>,
    /// The cluster's CA certificate: talk HTTPS to the nodes, trusting
    /// it (`raftlock dev`: raftlock-dev/certs/ca.pem). Without it, plain
    /// HTTP (nodes run with --insecure).
    #[arg(long, env = "RAFTLOCK_CA", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (`raftlock certs create-client`) to present
    /// instead of a credential; with --client-key.
    #[arg(
        long,
        env = "RAFTLOCK_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    #[arg(
        long,
        env = "RAFTLOCK_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
}

impl Endpoints {
    fn access(&self) -> Result<Access, String> {
        let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
        if client.is_some() && self.ca_file.is_none() {
            return Err(
                "--client-cert needs --ca-file (the client certificate goes over TLS)".into(),
            );
        }
        Access::new(self.credential.clone(), self.ca_file.as_deref(), client)
            .map_err(|e| e.to_string())
    }
}

#[derive(Args)]
pub struct LockArgs {
    /// The lock to hold.
    pub name: String,
    /// Session TTL: how long the lock outlives this process if it dies.
    #[arg(long, default_value_t = 10_000)]
    pub ttl_ms: u64,
    /// How long to wait for the lock (0: fail at once if taken).
    #[arg(long, default_value_t = 3_600_000)]
    pub wait_ms: u64,
    /// Take it shared (a reader) instead of exclusive.
    #[arg(long)]
    pub shared: bool,
    /// When the lock is lost (or on Ctrl-C), the command's whole process
    /// group gets SIGTERM, then SIGKILL after this long.
    #[arg(long, default_value_t = 1_000)]
    pub kill_grace_ms: u64,
    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct AcquireArgs {
    pub name: String,
    #[arg(long)]
    pub ttl_ms: Option<u64>,
    #[arg(long)]
    pub wait_ms: Option<u64>,
    #[arg(long)]
    pub shared: bool,
    /// A session to acquire in (else the node opens a one-lock session).
    #[arg(long)]
    pub session: Option<u64>,
}

#[derive(Args)]
pub struct ReleaseArgs {
    pub name: String,
    #[arg(long)]
    pub token: u64,
    #[arg(long)]
    pub session: u64,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// A new credential; its bearer string is printed once. Without
    /// --admin, give one --allow PREFIX=OPS per lock-name prefix, OPS a
    /// '+'-separated list of acquire, status, append, read.
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long = "allow", value_parser = parse_allow)]
        allow: Vec<(String, Vec<String>)>,
    },
    /// Every credential (ids, names, policies; never secrets).
    List,
    /// Revoke a credential by its id: it stops working on every node.
    Revoke { id: String },
}

fn parse_allow(s: &str) -> Result<(String, Vec<String>), String> {
    let (prefix, ops) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}' is not PREFIX=OPS (e.g. orders/=acquire+status)"))?;
    let ops: Vec<String> = ops.split('+').map(|o| o.trim().to_string()).collect();
    for o in &ops {
        if !["acquire", "status", "append", "read"].contains(&o.as_str()) {
            return Err(format!("'{o}' is not one of acquire, status, append, read"));
        }
    }
    Ok((prefix.to_string(), ops))
}

pub async fn token(e: &Endpoints, c: TokenCommand) -> Result<ExitCode, String> {
    let (status, v) = match c {
        TokenCommand::Create { name, admin, allow } => {
            let rules: Vec<Value> = allow
                .into_iter()
                .map(|(prefix, ops)| json!({ "prefix": prefix, "allow": ops }))
                .collect();
            let body = json!({ "name": name, "admin": admin, "rules": rules });
            http(e, "POST", "/API/v1/credentials", body).await?
        }
        TokenCommand::List => http(e, "GET", "/API/v1/credentials", Value::Null).await?,
        TokenCommand::Revoke { id } => {
            let path = format!("/API/v1/credentials/{id}");
            http(e, "DELETE", &path, Value::Null).await?
        }
    };
    Ok(print(status, &v))
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term and indexes, as one node sees them.
    Status,
    /// Admit a new node (start it with `serve --join` or an empty data dir
    /// and this node's peer address); it joins as a learner and becomes a
    /// voter once caught up.
    Add { id: u64, peer_addr: String },
    /// Remove a node from the configuration.
    Remove { id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { to: u64 },
}

/// Tries each endpoint in turn; the first that answers decides.
async fn http(
    e: &Endpoints,
    method: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Value), String> {
    let mut last = String::from("no endpoints");
    let access = e.access()?;
    for &addr in &e.endpoints {
        let mut client = HttpClient::with_access(addr, &access);
        match client.json(method, path, &body).await {
            Ok(r) => return Ok(r),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

fn print(status: u16, v: &Value) -> ExitCode {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    if status == 200 || status == 202 {
        println!("{text}");
        ExitCode::SUCCESS
    } else {
        eprintln!("raftlock: {status}: {text}");
        ExitCode::from(EXIT_REFUSED)
    }
}

pub async fn acquire(e: &Endpoints, a: AcquireArgs) -> Result<ExitCode, String> {
    let mut body = json!({});
    if let Some(t) = a.ttl_ms {
        body["ttl_ms"] = json!(t);
    }
    if let Some(w) = a.wait_ms {
        body["wait_ms"] = json!(w);
    }
    if a.shared {
        body["mode"] = json!("shared");
    }
    if let Some(s) = a.session {
        body["session"] = json!(s);
    }
    let (status, v) = http(e, "POST", &format!("/API/v1/locks/{}", a.name), body).await?;
    Ok(print(status, &v))
}

pub async fn release(e: &Endpoints, a: ReleaseArgs) -> Result<ExitCode, String> {
    let path = format!(
        "/API/v1/locks/{}?token={}&session={}",
        a.name, a.token, a.session
    );
    let (status, v) = http(e, "DELETE", &path, Value::Null).await?;
    Ok(print(status, &v))
}

pub async fn status(e: &Endpoints, name: &str) -> Result<ExitCode, String> {
    let (status, v) = http(e, "GET", &format!("/API/v1/locks/{name}"), Value::Null).await?;
    Ok(print(status, &v))
}

pub async fn sessions(e: &Endpoints) -> Result<ExitCode, String> {
    let (status, v) = http(e, "GET", "/API/v1/sessions", Value::Null).await?;
    Ok(print(status, &v))
}

pub async fn cluster(e: &Endpoints, c: ClusterCommand) -> Result<ExitCode, String> {
    let (method, path, body) = match c {
        ClusterCommand::Status => {
            let (status, v) = http(e, "GET", "/API/v1/cluster", Value::Null).await?;
            return Ok(print(status, &v));
        }
        ClusterCommand::Add { id, peer_addr } => (
            "POST",
            "/API/v1/cluster/members".to_string(),
            json!({ "id": id, "peer_addr": peer_addr }),
        ),
        ClusterCommand::Remove { id } => (
            "DELETE",
            format!("/API/v1/cluster/members/{id}"),
            Value::Null,
        ),
        ClusterCommand::TransferLeader { to } => (
            "POST",
            "/API/v1/cluster/leader".to_string(),
            json!({ "to": to }),
        ),
    };
    // Admin calls must reach the leader: try each endpoint until one is.
    let mut last = (503, json!({"message": "no endpoint answered"}));
    let access = e.access()?;
    for &addr in &e.endpoints {
        let mut client = HttpClient::with_access(addr, &access);
        match client.json(method, &path, &body).await {
            Ok((421, v)) => last = (421, v),
            Ok((status, v)) => return Ok(print(status, &v)),
            Err(err) => last = (503, json!({ "message": err.to_string() })),
        }
    }
    Ok(print(last.0, &last.1))
}

/// Holds the lock while the command runs: the token goes to the command as
/// `RAFTLOCK_TOKEN`; the lock is released when the command exits. The
/// command runs in its own process group, and the whole group is stopped
/// (SIGTERM, then SIGKILL after `--kill-grace-ms`): when the lock is lost
/// (exit status 3), on SIGINT or SIGTERM (130), and when the command exits
/// but left processes behind, before the lock is released, so nothing it
/// started goes on working without the lock.
pub async fn lock(e: &Endpoints, a: LockArgs) -> Result<ExitCode, String> {
    let ttl = Duration::from_millis(a.ttl_ms);
    let client = Client::connect_as(e.endpoints.clone(), ttl, e.access()?)
        .await
        .map_err(|e| e.to_string())?;
    let mut builder = client.lock(&a.name);
    if a.shared {
        builder = builder.shared();
    }
    if a.wait_ms > 0 {
        builder = builder.wait(Duration::from_millis(a.wait_ms));
    }
    let guard = match builder.acquire().await {
        Ok(g) => g,
        Err(ClientError::Call(err)) => {
            eprintln!("raftlock: lock {} not acquired: {err}", a.name);
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(err) => return Err(err.to_string()),
    };
    let Some((program, args)) = a.command.split_first() else {
        return Err("no command given after --".into());
    };
    let grace = Duration::from_millis(a.kill_grace_ms);
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("RAFTLOCK_LOCK", &a.name)
        .env("RAFTLOCK_TOKEN", guard.token().to_string())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id().map(|pid| pid as libc::pid_t);
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let outcome = tokio::select! {
        status = child.wait() => Ok(status.map_err(|e| format!("waiting for {program}: {e}"))?),
        _ = guard.lost() => Err(EXIT_LOST),
        _ = interrupt.recv() => Err(EXIT_INTERRUPTED),
        _ = terminate.recv() => Err(EXIT_INTERRUPTED),
    };
    // Whatever the command left running in its group stops before the
    // lock is released (or, when lost, as soon as we know).
    if let Some(group) = group {
        stop_group(group, grace).await;
    }
    let _ = child.wait().await;
    match outcome {
        Ok(status) => {
            guard.release().await.map_err(|e| e.to_string())?;
            let _ = client.close().await;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        Err(EXIT_LOST) => {
            eprintln!(
                "raftlock: lost lock {} (token {}): its lease ran out; stopped {program} and its process group",
                a.name,
                guard.token()
            );
            Ok(ExitCode::from(EXIT_LOST))
        }
        Err(code) => {
            eprintln!(
                "raftlock: interrupted; stopped {program} and released {}",
                a.name
            );
            let _ = guard.release().await;
            let _ = client.close().await;
            Ok(ExitCode::from(code))
        }
    }
}

/// SIGTERM to every process of `group`, then SIGKILL to what is left after
/// `grace`.
async fn stop_group(group: libc::pid_t, grace: Duration) {
    if !signal_group(group, libc::SIGTERM) {
        return; // nobody left
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(GROUP_POLL_MS)).await;
        if !signal_group(group, 0) {
            return;
        }
    }
    signal_group(group, libc::SIGKILL);
}

/// Sends `sig` to process group `group`; false if it has no process left.
fn signal_group(group: libc::pid_t, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group this
    // process created (the command's, made with `process_group(0)`).
    unsafe { libc::kill(-group, sig) == 0 }
}
