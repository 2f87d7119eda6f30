//! `GET /metrics`: the node's state as Prometheus text (gauges read from
//! Raft and the lock machine, the request layer's waits, the counters and
//! histograms the node keeps, and per-peer queues).

use super::api::{Gateway, Shared};
use super::error::ApiError;
use crate::runtime::Family;
use actix_web::web;
use actix_web::HttpResponse;

#[utoipa::path(get, path = "/metrics", tag = "ops", summary = "Prometheus text (no credential needed unless serve --metrics-auth)", responses((status = 200, description = "Prometheus exposition text", content_type = "text/plain")), security((), ("bearer" = [])))]
pub(super) async fn metrics(
    req: actix_web::HttpRequest,
    node: Shared,
    gateway: Gateway,
    settings: web::Data<super::HttpConfig>,
) -> Result<HttpResponse, ApiError> {
    if settings.metrics_auth {
        // Any valid credential may read them (`--metrics-auth`).
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("/metrics needs a credential here".into()))?;
        super::auth::authenticate(&node, header).await?;
    }
    let s = node.status().await?;
    let (sessions, locks, waiters, files) = node.inspect(|m| m.sizes()).await?;
    let is_leader = if s.role == crate::raft::Role::Leader {
        1.0
    } else {
        0.0
    };
    let gauges = [
        ("raftlock_term", "Current Raft term.", s.term as f64),
        ("raftlock_is_leader", "1 if this node leads.", is_leader),
        (
            "raftlock_commit_index",
            "Highest index known committed.",
            s.commit_index as f64,
        ),
        (
            "raftlock_applied_index",
            "Highest index applied here.",
            s.applied_index as f64,
        ),
        (
            "raftlock_last_index",
            "Last index of the local log.",
            s.last_index as f64,
        ),
        ("raftlock_sessions", "Live sessions.", sessions as f64),
        (
            "raftlock_locks",
            "Locks held, awaited or in lock-delay.",
            locks as f64,
        ),
        (
            "raftlock_waiters",
            "Queued acquires, all locks.",
            waiters as f64,
        ),
        ("raftlock_files", "Fenced files.", files as f64),
        (
            "raftlock_grant_waits",
            "Acquires and native waits on this node waiting for a grant.",
            gateway.waiting() as f64,
        ),
        (
            "raftlock_pending_requests",
            "Proposals and reads waiting on this node for an answer.",
            s.pending_requests as f64,
        ),
    ];
    let peer = |f: &dyn Fn(&crate::runtime::PeerQueue) -> f64| {
        s.peer_queues
            .iter()
            .map(|q| (format!("peer=\"{}\"", q.peer), f(q)))
            .collect()
    };
    let families = [
        Family {
            name: "raftlock_peer_send_queue",
            help: "Frames queued for each peer connection.",
            kind: "gauge",
            samples: peer(&|q| q.queued as f64),
        },
        Family {
            name: "raftlock_peer_dropped_total",
            help: "Frames dropped because a peer's send queue was full.",
            kind: "counter",
            samples: peer(&|q| q.dropped as f64),
        },
    ];
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(node.metrics().render(&gauges, &families)))
}
