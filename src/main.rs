//! The `raftlock` binary. `serve` runs one node; `dev` runs a local 3-node
//! cluster in one process for trying things out.

// The simulator builds every target under --cfg madsim, where actix and
// tokio's networking are not available; the binary is production-only.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    app::main()
}

#[cfg(not(madsim))]
mod cli;

#[cfg(not(madsim))]
mod app {
    use crate::cli;
    use clap::{Parser, Subcommand};
    use raftlock::actor::NodeId;
    use raftlock::bench::{self, Target, Workload};
    use raftlock::http::{self, HttpConfig};
    use raftlock::lock::{LockConfig, LockMachine};
    use raftlock::raft;
    use raftlock::runtime::{Cluster, Node, NodeConfig};
    use raftlock::tls::{self, PeerTls};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::net::TcpListener;

    #[derive(Parser)]
    #[command(
        name = "raftlock",
        version,
        about = "A distributed lock service on Raft"
    )]
    struct Cli {
        #[command(subcommand)]
        command: CliCommand,
        #[command(flatten)]
        endpoints: cli::Endpoints,
    }

    #[derive(Subcommand)]
    enum CliCommand {
        /// Run one node of a cluster.
        Serve(ServeArgs),
        /// Run a local 3-node cluster on 127.0.0.1 in this process.
        Dev(DevArgs),
        /// Make TLS certificates: a cluster CA, and one per node.
        Certs {
            #[command(subcommand)]
            command: CertsCommand,
        },
        /// Measure acquire+release throughput and latency of a running
        /// cluster (raftlock, or etcd for comparison).
        Bench(BenchArgs),
        /// Hold a lock while a command runs: `raftlock lock NAME -- CMD ARGS`.
        Lock(cli::LockArgs),
        /// Acquire a lock and print the grant (session, token).
        Acquire(cli::AcquireArgs),
        /// Release a lock by its token and session.
        Release(cli::ReleaseArgs),
        /// Who holds a lock, with which tokens and until when, and who waits.
        Status { name: String },
        /// The cluster's live sessions.
        Sessions,
        /// Cluster membership and leadership.
        Cluster {
            #[command(subcommand)]
            command: cli::ClusterCommand,
        },
        /// Credentials: create, list, revoke (an admin credential's calls).
        Token {
            #[command(subcommand)]
            command: cli::TokenCommand,
        },
    }

    #[derive(clap::Args)]
    struct BenchArgs {
        /// HTTP endpoints of the cluster (etcd: its client URLs).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203"
        )]
        endpoints: Vec<SocketAddr>,
        /// What the endpoints are.
        #[arg(long, default_value = "raftlock", value_parser = ["raftlock", "etcd"])]
        target: String,
        /// How raftlock clients talk: plain HTTP/JSON, or the Rust client
        /// library over the native protocol (`library`) or over HTTP
        /// (`library-http`).
        #[arg(long, default_value = "http", value_parser = ["http", "library", "library-http"])]
        driver: String,
        /// Which endpoints the clients use: all (round-robin), the leader
        /// only, or the followers only.
        #[arg(long, default_value = "all", value_parser = ["all", "leader", "followers"])]
        via: String,
        /// Seconds per workload.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Workloads: a (sequential), bN (N clients, own locks), cN (N
        /// clients, one lock).
        #[arg(long, value_delimiter = ',', default_value = "a,b1,b16,b64,c16")]
        workloads: Vec<String>,

        /// Session TTL for the sN workload.
        #[arg(long, default_value_t = 30_000)]
        ttl_ms: u64,
    }

    // The subcommands are named as CockroachDB's: create-ca, create-node,
    // create-client.
    #[allow(clippy::enum_variant_names)]
    #[derive(Subcommand)]
    enum CertsCommand {
        /// A new cluster CA: ca.pem (give it to every node) and ca.key
        /// (keep it off the nodes; it signs their certificates).
        CreateCa {
            #[arg(long, env = "RAFTLOCK_CERTS_DIR")]
            certs_dir: PathBuf,
        },
        /// A client certificate for a credential (client-ID.pem, .key),
        /// signed by the CA in the directory: presented instead of the
        /// credential's bearer string, it stops working when the
        /// credential is revoked.
        CreateClient {
            #[arg(long, env = "RAFTLOCK_CERTS_DIR")]
            certs_dir: PathBuf,
            /// The credential's id, as `raftlock token create|list` shows it.
            #[arg(long)]
            credential: String,
        },
        /// Node ID's certificate and key (node-ID.pem, node-ID.key), signed
        /// by the CA in the same directory.
        CreateNode {
            #[arg(long, env = "RAFTLOCK_CERTS_DIR")]
            certs_dir: PathBuf,
            #[arg(long)]
            id: NodeId,
            /// A name clients dial the node's HTTP API by (IP address or
            /// DNS name); repeat for each. Default: localhost and
            /// 127.0.0.1.
            #[arg(long = "host")]
            hosts: Vec<String>,
        },
    }

    #[derive(clap::Args)]
    struct ServeArgs {
        /// This node's id (a positive integer, unique in the cluster).
        #[arg(long, env = "RAFTLOCK_ID")]
        id: NodeId,
        /// Directory for this node's Raft log.
        #[arg(long, env = "RAFTLOCK_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to accept peer connections on, e.g. 127.0.0.1:7001.
        #[arg(long, env = "RAFTLOCK_LISTEN_PEER")]
        listen_peer: SocketAddr,
        /// Address to serve the HTTP API on.
        #[arg(long, env = "RAFTLOCK_LISTEN_HTTP", default_value = "127.0.0.1:7201")]
        listen_http: SocketAddr,
        /// Address to serve the native protocol on (the client library's
        /// persistent connections; docs/NATIVE.md), or `off`. Default: the
        /// HTTP address's host, its port + 100.
        #[arg(long, env = "RAFTLOCK_LISTEN_NATIVE", value_parser = parse_native)]
        listen_native: Option<NativeListen>,
        /// After a lock is freed by an expired session, nobody gets it for
        /// this long (0 disables; every node must use the same value).
        #[arg(long, env = "RAFTLOCK_LOCK_DELAY_MS", default_value_t = raftlock::lock::LOCK_DELAY_MS_DEFAULT)]
        lock_delay_ms: u64,
        /// Live sessions the cluster holds at most (every node must use
        /// the same value). With the other limits, the largest state they
        /// allow must fit a snapshot: a million sessions need
        /// --session-requests-max 16 or lower.
        #[arg(long, env = "RAFTLOCK_SESSIONS_MAX", default_value_t = raftlock::lock::Limits::default().sessions_max)]
        sessions_max: usize,
        /// Requests one session may have unanswered (and responses kept for
        /// exactly-once); every node must use the same value, and client
        /// libraries no more (theirs is 128 unless set in SessionConfig).
        #[arg(long, env = "RAFTLOCK_SESSION_REQUESTS_MAX", default_value_t = raftlock::lock::Limits::default().requests_inflight_max)]
        session_requests_max: u64,
        /// Threads serving HTTP.
        #[arg(long, env = "RAFTLOCK_HTTP_WORKERS", default_value_t = raftlock::http::HTTP_WORKERS)]
        http_workers: usize,
        /// Every member as id=host:port, comma-separated, this node included.
        #[arg(long, env = "RAFTLOCK_INITIAL_CLUSTER", value_parser = parse_cluster, required_unless_present = "join")]
        initial_cluster: Option<BTreeMap<NodeId, SocketAddr>>,
        /// The cluster's name: recorded in the data dir on first start and
        /// checked on every start after; peers of another name are refused.
        /// Give each cluster its own.
        #[arg(long, env = "RAFTLOCK_CLUSTER_NAME", default_value = raftlock::runtime::CLUSTER_NAME_DEFAULT, value_parser = parse_cluster_name)]
        cluster_name: Cluster,
        /// Join a running cluster through this member's peer address instead;
        /// the leader adds this node as a learner and promotes it once caught up.
        #[arg(long, env = "RAFTLOCK_JOIN", conflicts_with = "initial_cluster")]
        join: Option<SocketAddr>,
        /// This node's TLS material for its peers: ca.pem, node-ID.pem and
        /// node-ID.key, as `raftlock certs` makes them.
        #[arg(long, env = "RAFTLOCK_CERTS_DIR", required_unless_present = "insecure")]
        certs_dir: Option<PathBuf>,
        /// Peers without TLS: anyone who reaches the peer port can then
        /// take the cluster over. Only on a loopback or trusted network.
        #[arg(long, env = "RAFTLOCK_INSECURE", conflicts_with = "certs_dir")]
        insecure: bool,
        /// Where the cluster's first admin credential is written, by the
        /// node with the lowest id of --initial-cluster when it starts on
        /// an empty data dir (readable by its owner only).
        #[arg(long, env = "RAFTLOCK_ADMIN_CREDENTIAL_FILE")]
        admin_credential_file: Option<PathBuf>,
        /// /metrics needs a credential too (by default it is open, like
        /// /health).
        #[arg(long, env = "RAFTLOCK_METRICS_AUTH")]
        metrics_auth: bool,
        /// Calls per second one non-admin credential may make through this
        /// node (twice that in a burst); beyond, 429 with Retry-After. 0:
        /// no limit.
        #[arg(long, env = "RAFTLOCK_CREDENTIAL_CALLS_PER_S", default_value_t = raftlock::http::auth::CREDENTIAL_CALLS_PER_S_DEFAULT)]
        credential_calls_per_s: u32,
    }

    #[derive(clap::Args)]
    struct DevArgs {
        /// Directory for the three nodes' data (created if missing).
        #[arg(long, env = "RAFTLOCK_DEV_DIR", default_value = "raftlock-dev")]
        dir: PathBuf,
        /// First of three consecutive peer ports on 127.0.0.1.
        #[arg(long, env = "RAFTLOCK_DEV_PEER_PORT", default_value_t = 7101)]
        peer_port: u16,
        /// First of three consecutive HTTP API ports on 127.0.0.1.
        #[arg(long, env = "RAFTLOCK_DEV_HTTP_PORT", default_value_t = 7201)]
        http_port: u16,
        /// First of three consecutive native-protocol ports on 127.0.0.1
        /// (default: the HTTP port + 100).
        #[arg(long, env = "RAFTLOCK_DEV_NATIVE_PORT")]
        native_port: Option<u16>,
        /// Peers without TLS (by default a throwaway CA and node
        /// certificates are made under DIR/certs).
        #[arg(long)]
        insecure: bool,
    }

    /// Node `id`'s peer TLS from `certs_dir`, or none (and a warning) when
    /// run insecure.
    fn peer_tls(
        id: NodeId,
        certs_dir: Option<&std::path::Path>,
    ) -> Result<Option<Arc<PeerTls>>, String> {
        match certs_dir {
            Some(dir) => PeerTls::load(dir, id)
                .map(|t| Some(Arc::new(t)))
                .map_err(|e| e.to_string()),
            None => {
                tracing::warn!(
                    node = id,
                    "--insecure: peer connections are plain TCP; whoever reaches the peer port can take the cluster over"
                );
                Ok(None)
            }
        }
    }

    /// Makes what is missing of a CA and nodes 1..=n's certificates.
    fn ensure_certs(dir: &std::path::Path, ids: &[NodeId]) -> Result<(), String> {
        if !tls::ca_cert_path(dir).exists() {
            tls::create_ca(dir).map_err(|e| e.to_string())?;
        }
        for &id in ids {
            if !tls::node_cert_path(dir, id).exists() {
                tls::create_node(dir, id, &default_hosts()).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The admin credential's file name (`serve`: in the data dir; `dev`:
    /// in its directory).
    const ADMIN_CREDENTIAL_FILE: &str = "admin.token";

    /// Whether `dir` holds nothing yet (a first start).
    fn is_fresh(dir: &std::path::Path) -> bool {
        std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
    }

    /// The bootstrapping node's part: on a first start, writes a new admin
    /// credential to `file` and proposes it; on a later start with the
    /// file there, proposes it again (a no-op once the cluster has it), in
    /// case the first start stopped before it committed.
    fn bootstrap_admin(
        node: &Arc<Node<LockMachine>>,
        file: &std::path::Path,
        fresh: bool,
    ) -> Result<(), String> {
        let bearer = if file.exists() {
            http::auth::read_bearer(file)?
        } else if fresh {
            let b = http::auth::write_new_bearer(file)?;
            tracing::info!(file = %file.display(), "wrote the cluster's first admin credential");
            b
        } else {
            // A data dir from before credentials: bootstrap if it never was.
            http::auth::bootstrap_if_never(node.clone(), file.to_path_buf());
            return Ok(());
        };
        http::auth::bootstrap(node.clone(), file.to_path_buf(), bearer);
        Ok(())
    }

    fn default_hosts() -> Vec<String> {
        tls::API_HOSTS_DEFAULT
            .iter()
            .map(|h| h.to_string())
            .collect()
    }

    fn parse_cluster_name(s: &str) -> Result<Cluster, String> {
        Cluster::new(s)
    }

    fn parse_cluster(s: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
        let mut members = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not id=host:port"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("'{id}' in '{part}' is not a node id"))?;
            if id == 0 {
                return Err("node id 0 is reserved".into());
            }
            let addr: SocketAddr = addr
                .trim()
                .parse()
                .map_err(|e| format!("'{addr}' in '{part}': {e}"))?;
            if members.insert(id, addr).is_some() {
                return Err(format!("node {id} is listed twice"));
            }
        }
        if members.is_empty() {
            return Err("the cluster has no members".into());
        }
        Ok(members)
    }

    pub fn main() -> ExitCode {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init();
        let cli = Cli::parse();
        let system = actix_rt::System::new();
        let e = cli.endpoints;
        let done = |r: Result<(), String>| r.map(|()| ExitCode::SUCCESS);
        let result = match cli.command {
            CliCommand::Serve(args) => done(system.block_on(serve(args))),
            CliCommand::Dev(args) => done(system.block_on(dev(args))),
            CliCommand::Certs { command } => done(certs(command)),
            CliCommand::Bench(args) => done(system.block_on(bench(args))),
            CliCommand::Lock(args) => system.block_on(cli::lock(&e, args)),
            CliCommand::Acquire(args) => system.block_on(cli::acquire(&e, args)),
            CliCommand::Release(args) => system.block_on(cli::release(&e, args)),
            CliCommand::Status { name } => system.block_on(cli::status(&e, &name)),
            CliCommand::Sessions => system.block_on(cli::sessions(&e)),
            CliCommand::Cluster { command } => system.block_on(cli::cluster(&e, command)),
            CliCommand::Token { command } => system.block_on(cli::token(&e, command)),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("raftlock: {e}");
                ExitCode::from(2)
            }
        }
    }

    fn certs(command: CertsCommand) -> Result<(), String> {
        match command {
            CertsCommand::CreateCa { certs_dir } => {
                tls::create_ca(&certs_dir).map_err(|e| e.to_string())?;
                println!(
                    "wrote {} and {} (keep the key off the nodes)",
                    tls::ca_cert_path(&certs_dir).display(),
                    tls::ca_key_path(&certs_dir).display()
                );
            }
            CertsCommand::CreateClient {
                certs_dir,
                credential,
            } => {
                let id = u64::from_str_radix(&credential, 16)
                    .ok()
                    .filter(|_| credential.len() == 16)
                    .ok_or_else(|| {
                        format!("{credential:?} is not a credential id (16 hex digits)")
                    })?;
                tls::create_client(&certs_dir, id).map_err(|e| e.to_string())?;
                println!(
                    "wrote {} and {}",
                    tls::client_cert_path(&certs_dir, id).display(),
                    tls::client_key_path(&certs_dir, id).display()
                );
            }
            CertsCommand::CreateNode {
                certs_dir,
                id,
                hosts,
            } => {
                let hosts = if hosts.is_empty() {
                    default_hosts()
                } else {
                    hosts
                };
                tls::create_node(&certs_dir, id, &hosts).map_err(|e| e.to_string())?;
                println!(
                    "wrote {} and {}",
                    tls::node_cert_path(&certs_dir, id).display(),
                    tls::node_key_path(&certs_dir, id).display()
                );
            }
        }
        Ok(())
    }

    async fn serve(args: ServeArgs) -> Result<(), String> {
        let peers = args.initial_cluster.unwrap_or_default();
        if args.join.is_none() {
            let advertised = peers
                .get(&args.id)
                .ok_or_else(|| format!("--id {} is not in --initial-cluster", args.id))?;
            if advertised.port() != args.listen_peer.port() {
                return Err(format!(
                    "--listen-peer {} and this node's --initial-cluster address {advertised} use different ports",
                    args.listen_peer
                ));
            }
        }
        let tls = peer_tls(args.id, args.certs_dir.as_deref())?;
        if args.insecure {
            tracing::warn!(
                node = args.id,
                "--insecure: the HTTP API is plain HTTP and takes calls without credentials; serve it on loopback only"
            );
        }
        let bootstrapper = args.join.is_none() && peers.keys().next() == Some(&args.id);
        let fresh = is_fresh(&args.data_dir);
        let admin_file = args
            .admin_credential_file
            .clone()
            .unwrap_or_else(|| args.data_dir.join(ADMIN_CREDENTIAL_FILE));
        let listener = TcpListener::bind(args.listen_peer)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen_peer))?;
        let config = NodeConfig {
            id: args.id,
            data_dir: args.data_dir,
            peers,
            join: args.join,
            raft: raft::Config::default(),
            cluster: args.cluster_name,
            tls,
        };
        let mut lock_config = LockConfig {
            lock_delay: Duration::from_millis(args.lock_delay_ms),
            ..LockConfig::default()
        };
        lock_config.limits.sessions_max = args.sessions_max;
        lock_config.limits.requests_inflight_max = args.session_requests_max;
        lock_config
            .validate(config.raft.snapshot_bytes_max)
            .map_err(|e| format!("inconsistent limits: {e}"))?;
        let node = Arc::new(
            Node::start_with(config, listener, LockMachine::new(lock_config.clone()))
                .map_err(|e| e.to_string())?,
        );
        let http_listener = match std::net::TcpListener::bind(args.listen_http) {
            Ok(l) => l,
            Err(e) => {
                node.stop_shared();
                return Err(format!(
                    "cannot listen on {} for HTTP: {e}",
                    args.listen_http
                ));
            }
        };
        let native_listener = match native_addr(args.listen_native, args.listen_http) {
            Ok(None) => None,
            Ok(Some(addr)) => match std::net::TcpListener::bind(addr) {
                Ok(l) => Some(l),
                Err(e) => {
                    node.stop_shared();
                    return Err(format!(
                        "cannot listen on {addr} for the native protocol: {e} (--listen-native ADDR, or off)"
                    ));
                }
            },
            Err(e) => {
                node.stop_shared();
                return Err(e);
            }
        };
        let api_tls = match &args.certs_dir {
            Some(dir) => match tls::api_server_config(dir, args.id) {
                Ok(c) => Some(c),
                Err(e) => {
                    node.stop_shared();
                    return Err(e.to_string());
                }
            },
            None => None,
        };
        let http_config = HttpConfig {
            workers: args.http_workers,
            drift_ppm: lock_config.drift_ppm,
            auth_required: !args.insecure,
            metrics_auth: args.metrics_auth,
            calls_per_credential_per_s: args.credential_calls_per_s,
            tls: api_tls,
        };
        if !args.insecure && bootstrapper {
            if let Err(e) = bootstrap_admin(&node, &admin_file, fresh) {
                node.stop_shared();
                return Err(e);
            }
        }
        let native = native_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        let server =
            http::serve_with_native(node.clone(), http_listener, native_listener, http_config)
                .map_err(|e| format!("cannot serve HTTP on {}: {e}", args.listen_http))?;
        let server_handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(node = args.id, peer = %args.listen_peer, http = %args.listen_http, native = %native, "serving; Ctrl-C to stop");
        wait_for_stop_signal().await?;
        server_handle.stop(true).await;
        node.shutdown().await;
        Ok(())
    }

    /// `--listen-native`: an address, or `off`.
    #[derive(Clone, Copy, Debug)]
    enum NativeListen {
        Off,
        At(SocketAddr),
    }

    fn parse_native(s: &str) -> Result<NativeListen, String> {
        if s == "off" {
            return Ok(NativeListen::Off);
        }
        s.parse()
            .map(NativeListen::At)
            .map_err(|e| format!("'{s}': {e}; expected host:port or off"))
    }

    /// Where to serve the native protocol: as given, or beside the HTTP
    /// API at its port + `NATIVE_PORT_OFFSET`.
    fn native_addr(
        flag: Option<NativeListen>,
        http: SocketAddr,
    ) -> Result<Option<SocketAddr>, String> {
        match flag {
            Some(NativeListen::Off) => Ok(None),
            Some(NativeListen::At(addr)) => Ok(Some(addr)),
            None => match http.port().checked_add(NATIVE_PORT_OFFSET) {
                Some(port) => Ok(Some(SocketAddr::new(http.ip(), port))),
                None => Err(format!(
                    "--listen-http {http}: its port + {NATIVE_PORT_OFFSET} is no port; give --listen-native"
                )),
            },
        }
    }

    /// The native protocol's default port, from the HTTP API's.
    const NATIVE_PORT_OFFSET: u16 = 100;

    fn parse_workload(w: &str) -> Result<Workload, String> {
        let n = |rest: &str| {
            rest.parse::<usize>()
                .map_err(|_| format!("workload '{w}': expected a client count after the letter"))
        };
        match w.split_at(w.len().min(1)) {
            ("a", "") => Ok(Workload::Sequential),
            ("b", rest) => Ok(Workload::OwnLocks(n(rest)?)),
            ("c", rest) => Ok(Workload::Contended(n(rest)?)),
            ("s", rest) => Ok(Workload::Sessions(n(rest)?)),
            _ => Err(format!("unknown workload '{w}' (a, bN or cN)")),
        }
    }

    async fn bench(args: BenchArgs) -> Result<(), String> {
        let target = match (args.target.as_str(), args.driver.as_str()) {
            ("etcd", _) => Target::Etcd,
            (_, "library") => Target::RaftlockLibrary(raftlock::client::Door::Native),
            (_, "library-http") => Target::RaftlockLibrary(raftlock::client::Door::Http),
            _ => Target::Raftlock,
        };
        let via = match args.via.as_str() {
            "leader" => bench::Via::Leader,
            "followers" => bench::Via::Followers,
            _ => bench::Via::All,
        };
        let workloads: Vec<Workload> = args
            .workloads
            .iter()
            .map(|w| parse_workload(w))
            .collect::<Result<_, _>>()?;
        let endpoints = bench::endpoints_via(target, &args.endpoints, via)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{} ({}) via {} at {}, {} s per workload",
            args.target,
            args.driver,
            args.via,
            endpoints
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(","),
            args.secs
        );
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>8}",
            "workload", "pairs/s", "p50 ms", "p99 ms", "errors"
        );
        for w in workloads {
            if let Workload::Sessions(n) = w {
                let ttl = Duration::from_millis(args.ttl_ms);
                let secs = Duration::from_secs_f64(args.secs);
                let r = match target {
                    Target::RaftlockLibrary(raftlock::client::Door::Native) => {
                        bench::sessions_native(&endpoints, n, ttl, secs).await
                    }
                    _ => bench::sessions(&endpoints, n, ttl, secs).await,
                }
                .map_err(|e| format!("{}: {e}", w.name()))?;
                println!(
                    "{}: opened {} in {:.1} s, {} keepalives over {} s ({:.0}/s), {} spurious expiries, {} errors",
                    w.name(),
                    r.opened,
                    r.open_secs,
                    r.keepalives,
                    args.secs,
                    r.keepalives as f64 / args.secs,
                    r.expired,
                    r.errors
                );
                continue;
            }
            let r = bench::run(target, &endpoints, w, Duration::from_secs_f64(args.secs))
                .await
                .map_err(|e| format!("{}: {e}", w.name()))?;
            println!(
                "{:<28} {:>12.0} {:>12.2} {:>12.2} {:>8}",
                w.name(),
                r.pairs_per_s(),
                r.acquire_p50_ms,
                r.acquire_p99_ms,
                r.errors
            );
            if let Some(e) = &r.first_error {
                eprintln!("  first error of {}: {e}", w.name());
            }
        }
        Ok(())
    }

    /// Ctrl-C or SIGTERM (what systemd and `kill` send).
    async fn wait_for_stop_signal() -> Result<(), String> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot wait for Ctrl-C: {e}")),
            _ = term.recv() => Ok(()),
        }
    }

    async fn dev(args: DevArgs) -> Result<(), String> {
        let mut peers = BTreeMap::new();
        let mut listeners = Vec::new();
        for i in 0..3u16 {
            let id = NodeId::from(i) + 1;
            let port =
                |base: u16, flag: &str| base.checked_add(i).ok_or(format!("{flag} is too high"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port(args.peer_port, "--peer-port")?));
            let http = SocketAddr::from(([127, 0, 0, 1], port(args.http_port, "--http-port")?));
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let h = std::net::TcpListener::bind(http)
                .map_err(|e| format!("cannot listen on {http} for HTTP: {e}"))?;
            let native_base = match args.native_port {
                Some(p) => p,
                None => args
                    .http_port
                    .checked_add(NATIVE_PORT_OFFSET)
                    .ok_or(format!(
                        "--http-port {}: its + {NATIVE_PORT_OFFSET} is no port; give --native-port",
                        args.http_port
                    ))?,
            };
            let native = SocketAddr::from(([127, 0, 0, 1], port(native_base, "--native-port")?));
            let n = std::net::TcpListener::bind(native)
                .map_err(|e| format!("cannot listen on {native} for the native protocol: {e}"))?;
            peers.insert(id, addr);
            listeners.push((id, l, h, http, n, native));
        }
        let mut nodes = Vec::new();
        let mut servers = Vec::new();
        let certs_dir = args.dir.join("certs");
        let certs_dir = match args.insecure {
            true => None,
            false => {
                let ids: Vec<NodeId> = peers.keys().copied().collect();
                ensure_certs(&certs_dir, &ids)?;
                Some(certs_dir)
            }
        };
        println!("raftlock dev: 3 nodes, data under {}", args.dir.display());
        match &certs_dir {
            Some(dir) => println!(
                "  peers talk mutual TLS with a throwaway CA in {}",
                dir.display()
            ),
            None => println!("  --insecure: peers talk plain TCP"),
        }
        let admin_file = args.dir.join(ADMIN_CREDENTIAL_FILE);
        for (id, listener, http_listener, http, native_listener, native) in listeners {
            let data_dir = args.dir.join(format!("node{id}"));
            let fresh = is_fresh(&data_dir);
            let config = NodeConfig {
                id,
                data_dir,
                peers: peers.clone(),
                join: None,
                raft: raft::Config::default(),
                cluster: Default::default(),
                tls: peer_tls(id, certs_dir.as_deref())?,
            };
            let node = Arc::new(
                Node::start_with(config, listener, LockMachine::new(LockConfig::default()))
                    .map_err(|e| format!("node {id}: {e}"))?,
            );
            let server = http::serve_with_native(
                node.clone(),
                http_listener,
                Some(native_listener),
                HttpConfig {
                    workers: 1,
                    auth_required: !args.insecure,
                    tls: match &certs_dir {
                        Some(dir) => Some(
                            tls::api_server_config(dir, id)
                                .map_err(|e| format!("node {id}: {e}"))?,
                        ),
                        None => None,
                    },
                    ..HttpConfig::default()
                },
            )
            .map_err(|e| format!("node {id}: cannot serve HTTP on {http}: {e}"))?;
            if !args.insecure && id == 1 {
                bootstrap_admin(&node, &admin_file, fresh)?;
            }
            servers.push(server.handle());
            actix_rt::spawn(server);
            let scheme = if certs_dir.is_some() { "https" } else { "http" };
            println!(
                "  node {id}: {scheme}://{http}  (native {native}, peer {})",
                peers[&id]
            );
            nodes.push(node);
        }
        let first = SocketAddr::from(([127, 0, 0, 1], args.http_port));
        println!();
        println!("try:");
        let (auth, first) = match &certs_dir {
            None => (String::new(), format!("http://{first}")),
            Some(dir) => {
                let ca = tls::ca_cert_path(dir);
                println!(
                    "  export RAFTLOCK_CREDENTIAL=$(cat {}) RAFTLOCK_CA={}   # for the CLI and the library",
                    admin_file.display(),
                    ca.display()
                );
                (
                    format!(
                        " --cacert {} -H \"Authorization: Bearer $RAFTLOCK_CREDENTIAL\"",
                        ca.display()
                    ),
                    format!("https://{first}"),
                )
            }
        };
        println!("  curl -s{auth} -X POST {first}/API/v1/locks/my-lock -d '{{\"ttl_ms\": 30000}}'");
        println!("  curl -s{auth} {first}/API/v1/locks/my-lock");
        println!("  curl -s{auth} {first}/API/v1/cluster");
        println!("Ctrl-C to stop");
        wait_for_stop_signal().await?;
        for server in servers {
            server.stop(true).await;
        }
        for node in nodes {
            node.stop_shared();
        }
        println!("stopped");
        Ok(())
    }
}
