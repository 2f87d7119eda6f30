//! Protecting a resource with fencing tokens, end to end: two clients take
//! turns on a lock and write to a resource that checks their tokens; a
//! writer that kept an old token is refused.
//!
//! Start a cluster first (`cargo run --release -- dev`), then:
//!
//! ```sh
//! cargo run --example fenced_write
//! ```

use raftlock::client::Client;
use raftlock::lock::fence::FenceVerifier;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The protected resource: a log that only the newest token may append to.
struct Resource {
    fence: FenceVerifier,
    log: Mutex<Vec<String>>,
}

impl Resource {
    fn write(&self, token: u64, line: &str) -> Result<(), String> {
        self.fence
            .guard("audit-log", token, || {
                self.log.lock().unwrap().push(format!("{token}: {line}"));
            })
            .map_err(|e| e.to_string())
    }
}

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
