//! Clients' own credentials, made as an operator makes them (`raftlock
//! token create`, `raftlock token revoke`): a `Manage` call with the admin
//! credential to any node, retried until the cluster answers it. Every
//! simulated client enrolls before its workload starts, so every call it
//! makes carries its own credential through the node's door.

use crate::cluster::SimFrame;
use crate::shared::{authorization, lock, random_bearer, Shared};
use madsim::net::Endpoint;
use madsim::time::{sleep, timeout};
use raftlock::credential::Bearer;
use raftlock::gateway::{Answer, Request};
use raftlock::lock::auth::{Allow, CredentialId, Policy, Rule};
use raftlock::lock::{encode, Command, LockError, Reply, Response};
use raftlock::net::{decode_frame, encode_frame};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const TAG: u64 = 1;
/// The port a client's admin line binds beside its own (same address, so
/// the same faults cut it off).
pub const ADMIN_PORT: u16 = 9100;
/// How long an admin call waits for its answer before it tries again.
const ADMIN_ANSWER_MS: u64 = 1_000;
const ADMIN_RETRY_MS: u64 = 100;
/// Attempts of one admin call; a run is over long before.
const ADMIN_ATTEMPTS_MAX: u32 = 1_000;

/// Everything, on every lock: what the workload clients get.
pub fn all_locks() -> Policy {
    Policy {
        admin: false,
        rules: vec![Rule {
            prefix: String::new(),
            allow: Allow {
                acquire: true,
                status: true,
                append: true,
                read: true,
            },
        }],
    }
}

/// Calls made with the admin credential, from one client's address.
pub struct AdminLine {
    ep: Endpoint,
    next: u64,
}

impl AdminLine {
    pub async fn bind(ip: IpAddr) -> AdminLine {
        let ep = Endpoint::bind(SocketAddr::new(ip, ADMIN_PORT))
            .await
            .expect("bind admin endpoint");
        AdminLine { ep, next: 0 }
    }

    /// A new credential with `policy`, created through the cluster; None
    /// if no node answered in `ADMIN_ATTEMPTS_MAX` tries. Each try is a
    /// new credential, as each `POST /API/v1/credentials` is: a retry of
    /// the same id could land after a later revocation of it and bring it
    /// back (a try that timed out may still be in a follower's forward).
    pub async fn create(&mut self, shared: &Shared, name: &str, policy: Policy) -> Option<Bearer> {
        for _ in 0..ADMIN_ATTEMPTS_MAX {
            let bearer = random_bearer();
            let command = Command::CreateCredential {
                id: bearer.id,
                name: name.to_string(),
                hash: bearer.hash(),
                policy: policy.clone(),
            };
            match self.try_once(shared, &command).await {
                Some(Ok(Reply::CredentialCreated { .. })) => return Some(bearer),
                Some(other) => panic!("creating a credential answered {other:?}"),
                None => sleep(Duration::from_millis(ADMIN_RETRY_MS)).await,
            }
        }
        None
    }

    /// Revokes `id`; true once the revocation is applied.
    pub async fn revoke(&mut self, shared: &Shared, id: CredentialId) -> bool {
        match self.run(shared, &Command::RevokeCredential { id }).await {
            // A retry of a revocation that had landed.
            Some(Ok(Reply::CredentialRevoked) | Err(LockError::UnknownCredential)) => true,
            Some(other) => panic!("revoking a credential answered {other:?}"),
            None => false,
        }
    }

    /// The lock machine's response to `command`, made with the admin
    /// credential, tried until one comes.
    async fn run(&mut self, shared: &Shared, command: &Command) -> Option<Response> {
        for _ in 0..ADMIN_ATTEMPTS_MAX {
            if let Some(response) = self.try_once(shared, command).await {
                return Some(response);
            }
            sleep(Duration::from_millis(ADMIN_RETRY_MS)).await;
        }
        None
    }

    /// One try of `command` through a random node: the lock machine's
    /// response, or None if the outcome is unknown or the door refused the
    /// admin credential (the cluster is not bootstrapped yet).
    async fn try_once(&mut self, shared: &Shared, command: &Command) -> Option<Response> {
        let nodes: Vec<SocketAddr> = shared.addrs.values().copied().collect();
        self.next += 1;
        let id = self.next;
        let to = nodes[madsim::rand::thread_rng().gen_range(0..nodes.len())];
        let frame = SimFrame::Call {
            id,
            credential: Some(authorization(&shared.admin)),
            request: Request::Manage(encode(command)),
        };
        if let Ok(bytes) = encode_frame(&frame) {
            let _ = self.ep.send_to_raw(to, TAG, Box::new(bytes)).await;
        }
        let answer = timeout(Duration::from_millis(ADMIN_ANSWER_MS), self.answer(id)).await;
        if crate::trace::on() {
            use crate::trace::V;
            let result = format!("{answer:?}");
            let mut checker = lock(&shared.checker);
            checker.now = shared.elapsed();
            let fields = [
                ("call", V::S(command.label())),
                ("to", V::S(&to.to_string())),
                (
                    "result",
                    V::S(&result.chars().take(200).collect::<String>()),
                ),
            ];
            checker.trace_event(0, "admin_call", &fields);
        }
        match answer {
            Ok(Some(Ok(Answer::Output(applied)))) => {
                match postcard::from_bytes::<Response>(&applied.output) {
                    Ok(Err(LockError::Unauthenticated)) | Err(_) => None,
                    Ok(response) => Some(response),
                }
            }
            Ok(_) => None,
            Err(_) => {
                // Given up: production's client closes the connection.
                if let Ok(bytes) = encode_frame(&SimFrame::Gone { id }) {
                    let _ = self.ep.send_to_raw(to, TAG, Box::new(bytes)).await;
                }
                None
            }
        }
    }

    async fn answer(&self, id: u64) -> Option<Result<Answer, raftlock::gateway::GatewayError>> {
        loop {
            let Ok((payload, _)) = self.ep.recv_from_raw(TAG).await else {
                return None;
            };
            let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
                continue;
            };
            if let Ok(Some((SimFrame::Answer { id: a, result }, _))) =
                decode_frame::<SimFrame>(&bytes)
            {
                if a == id {
                    return Some(result);
                }
            }
        }
    }
}

/// A workload client's own credential (every lock), made before it starts.
pub async fn enroll(shared: &Shared, ip: IpAddr, name: &str) -> Option<Bearer> {
    let mut line = AdminLine::bind(ip).await;
    line.create(shared, name, all_locks()).await
}
