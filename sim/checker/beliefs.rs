//! What clients believe (`client-beliefs`): the question a user asks, "did
//! two of us believe we held it at once?", asked from the clients' side,
//! through every front end (the session actor, the client library).
//!
//! A client believes it holds a lock from the moment a grant reaches it
//! until it lets go (a release, a close), it is told the lock is lost, or
//! its own lease runs out: each client reports the real instant its
//! drifting clock reaches the end of the lease it trusts (the documented
//! margin, docs/SAFETY.md rule 2), so a belief is valid only while the
//! client may still trust its lease, whatever it does after. It is a
//! violation when, at the moment a client starts believing:
//! - another belief of the same lock is exclusive (or this one is);
//! - shared and semaphore holders mix, or a semaphore has more believers
//!   than its limit.
//!
//! And, for the client library: a guard whose lease has ended must be told
//! so (`Guard::lost()`) soon after its client could see it
//! (`on_lease_ended_unnoticed`).

use std::collections::BTreeMap;
use std::time::Duration;

/// A lock mode as believed (`lock::Mode`, without the dependency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Believed {
    Exclusive,
    Shared,
    Semaphore(u32),
}

#[derive(Clone, Debug)]
struct Belief {
    client: u64,
    /// A client's own name for this belief (a guard, a call).
    id: u64,
    session: u64,
    mode: Believed,
    token: u64,
    since: Duration,
}

#[derive(Default)]
pub struct Beliefs {
    /// lock -> active beliefs.
    active: BTreeMap<String, Vec<Belief>>,
    /// (client, session) -> the real instant the client stops trusting
    /// that session's lease.
    trusted_until: BTreeMap<(u64, u64), Duration>,
    /// (client, lock) -> the highest token a new grant to it carried.
    high_tokens: BTreeMap<(u64, String), u64>,
    pub beliefs_checked: u64,
    /// Library guards that were told their lock was lost (`lost()`).
    pub guards_told_lost: u64,
}

impl Beliefs {
    pub const NAME: &'static str = "client-beliefs";

    /// `client` trusts `session`'s lease until real time `until`.
    pub fn on_trusted_until(&mut self, client: u64, session: u64, until: Duration) {
        let e = self.trusted_until.entry((client, session)).or_default();
        *e = (*e).max(until);
    }

    fn still_valid(&self, b: &Belief, now: Duration) -> bool {
        self.trusted_until
            .get(&(b.client, b.session))
            .is_some_and(|&until| now < until)
    }

    /// `client` starts to believe, at real time `now`, that it holds
    /// `lock` in `mode` with `token` (belief `id`, in `session`).
    #[allow(clippy::too_many_arguments)]
    pub fn on_believe(
        &mut self,
        client: u64,
        id: u64,
        session: u64,
        lock: &str,
        mode: Believed,
        token: u64,
        now: Duration,
    ) -> Result<(), String> {
        self.beliefs_checked += 1;
        let new = Belief {
            client,
            id,
            session,
            mode,
            token,
            since: now,
        };
        let others: Vec<Belief> = self
            .active
            .get(lock)
            .map(|list| {
                list.iter()
                    .filter(|b| !(b.client == client && b.id == id))
                    .filter(|b| self.still_valid(b, now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let list = self.active.entry(lock.to_string()).or_default();
        list.retain(|b| !(b.client == client && b.id == id));
        list.push(new.clone());
        if let Some(clash) = clash(&new, &others) {
            return Err(format!(
                "at {now:?}, client {client} believes it holds {lock} {mode:?} with token {token} (session {session}), while {clash}"
            ));
        }
        Ok(())
    }

    /// `client` was granted `lock` with `token` by a new acquire (not a
    /// re-acquire of what it holds). It asked after its earlier grants of
    /// the lock reached it, so the token must be above theirs: an equal or
    /// lower one is an old grant answering a new acquire.
    pub fn on_new_grant(&mut self, client: u64, lock: &str, token: u64) -> Result<(), String> {
        let high = self
            .high_tokens
            .entry((client, lock.to_string()))
            .or_default();
        if token <= *high {
            return Err(format!(
                "client {client} was granted {lock} with token {token}, not above token {high} of its own earlier grant: an old grant answered a new acquire"
            ));
        }
        *high = token;
        Ok(())
    }

    /// `client` no longer believes belief `id` (released, lost, closed).
    pub fn on_unbelieve(&mut self, client: u64, id: u64) {
        for list in self.active.values_mut() {
            list.retain(|b| !(b.client == client && b.id == id));
        }
        self.active.retain(|_, list| !list.is_empty());
    }

    /// Everything `client` believes ends (its session is over, or it went
    /// away).
    pub fn on_client_reset(&mut self, client: u64) {
        for list in self.active.values_mut() {
            list.retain(|b| b.client != client);
        }
        self.active.retain(|_, list| !list.is_empty());
    }
}

/// Why `new` cannot be believed beside `others`, if it cannot.
fn clash(new: &Belief, others: &[Belief]) -> Option<String> {
    let describe = |b: &Belief| {
        format!(
            "client {} believes it holds it {:?} with token {} (session {}, since {:?})",
            b.client, b.mode, b.token, b.session, b.since
        )
    };
    for b in others {
        let compatible = match (new.mode, b.mode) {
            (Believed::Shared, Believed::Shared) => true,
            (Believed::Semaphore(n), Believed::Semaphore(m)) => n == m,
            _ => false,
        };
        if !compatible {
            return Some(describe(b));
        }
    }
    if let Believed::Semaphore(n) = new.mode {
        if others.len() + 1 > n as usize {
            let all: Vec<String> = others.iter().map(describe).collect();
            return Some(format!(
                "{} already believe they hold a semaphore of {n}: {}",
                others.len(),
                all.join("; ")
            ));
        }
    }
    None
}

/// The checker on its own, as the `client_beliefs` test runs it: clashes
/// are caught, beliefs past their lease do not count, compatible ones pass.
pub fn self_check() -> Result<String, String> {
    let s = Duration::from_secs;
    let mut b = Beliefs::default();
    b.on_trusted_until(1, 10, s(10));
    b.on_trusted_until(2, 20, s(10));
    b.on_believe(1, 1, 10, "l", Believed::Shared, 1, s(1))?;
    b.on_believe(2, 1, 20, "l", Believed::Shared, 2, s(1))?;
    if b.on_believe(1, 2, 10, "l", Believed::Exclusive, 1, s(2))
        .is_ok()
    {
        return Err("an exclusive belief beside a shared one passed".into());
    }
    // A belief whose lease has run out no longer counts.
    let mut b = Beliefs::default();
    b.on_trusted_until(1, 10, s(5));
    b.on_trusted_until(2, 20, s(20));
    b.on_believe(1, 1, 10, "x", Believed::Exclusive, 1, s(1))?;
    b.on_believe(2, 1, 20, "x", Believed::Exclusive, 2, s(6))?;
    // A semaphore of 2 with a third believer.
    let mut b = Beliefs::default();
    for c in 1..=3 {
        b.on_trusted_until(c, c, s(10));
    }
    b.on_believe(1, 1, 1, "s", Believed::Semaphore(2), 1, s(1))?;
    b.on_believe(2, 1, 2, "s", Believed::Semaphore(2), 2, s(1))?;
    if b.on_believe(3, 1, 3, "s", Believed::Semaphore(2), 3, s(1))
        .is_ok()
    {
        return Err("a third believer of a semaphore of 2 passed".into());
    }
    // An old token answering a new acquire.
    let mut b = Beliefs::default();
    b.on_new_grant(1, "x", 5)?;
    b.on_new_grant(2, "x", 6)?;
    b.on_new_grant(1, "x", 7)?;
    if b.on_new_grant(1, "x", 5).is_ok() {
        return Err("an old token for a new acquire passed".into());
    }
    Ok("clashes and old tokens caught; lapsed leases and compatible modes pass".into())
}
