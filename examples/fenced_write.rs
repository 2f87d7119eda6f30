//! Protecting a resource with fencing tokens, end to end: two clients take
//! turns on a lock and write to a resource that checks their tokens; a
//! writer that kept an old token is refused.
//!
//! Start a cluster first (`cargo run --release -- dev`), then:
//!
//! ```sh
//! cargo run --example fenced_write
//! ```

// The simulator builds every target under --cfg madsim, where the client
// (actix, tokio networking) does not exist.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
use raftlock::client::Client;
#[cfg(not(madsim))]
use raftlock::lock::fence::FenceVerifier;
#[cfg(not(madsim))]
use std::net::SocketAddr;
#[cfg(not(madsim))]
use std::sync::Mutex;
#[cfg(not(madsim))]
use std::time::Duration;

/// The protected resource: a log that only the newest token may append to.
#[cfg(not(madsim))]
struct Resource {
    fence: FenceVerifier,
    log: Mutex<Vec<String>>,
}

#[cfg(not(madsim))]
impl Resource {
    fn write(&self, token: u64, line: &str) -> Result<(), String> {
        self.fence
            .guard("audit-log", token, || {
                self.log.lock().unwrap().push(format!("{token}: {line}"));
            })
            .map_err(|e| e.to_string())
    }
}

#[cfg(not(madsim))]
#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<SocketAddr> = std::env::var("RAFTLOCK_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let resource = Resource {
        fence: FenceVerifier::default(),
        log: Mutex::new(Vec::new()),
    };
    let ttl = Duration::from_secs(10);
    let alice = Client::connect(endpoints.clone(), ttl).await?;
    let bob = Client::connect(endpoints, ttl).await?;

    let a = alice
        .lock("audit")
        .wait(Duration::from_secs(5))
        .acquire()
        .await?;
    let alice_token = a.token();
    resource.write(alice_token, "alice was here")?;
    a.release().await?;

    let b = bob
        .lock("audit")
        .wait(Duration::from_secs(5))
        .acquire()
        .await?;
    resource.write(b.token(), "bob was here")?;
    // Alice, who paused with her old token, tries again: refused.
    match resource.write(alice_token, "alice, late") {
        Err(e) => println!("refused as it should be: {e}"),
        Ok(()) => return Err("a stale token was accepted".into()),
    }
    b.release().await?;
    for line in resource.log.lock().unwrap().iter() {
        println!("{line}");
    }
    Ok(())
}
