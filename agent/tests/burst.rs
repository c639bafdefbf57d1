//! 10,000 agent-check connections in a burst, 200 at a time: every one is answered with the
//! full line, and the reply-time percentiles are printed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Agent, Postgres, pg_database};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const CONNECTIONS: usize = 10_000;
const AT_ONCE: usize = 200;

#[test]
fn ten_thousand_agent_checks_all_answered() {
    let pg = Postgres::primary();
    let agent = Agent::start(&pg_database(pg.port(), "postgres"), "inter: 500ms\n");
    agent.wait_line(Duration::from_secs(10), |l| l.starts_with("up ready"));
    let addr = agent.agent;

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (mut times, failures) = rt.block_on(async move {
        let slots = Arc::new(Semaphore::new(AT_ONCE));
        let mut tasks = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let slot = Arc::clone(&slots).acquire_owned().await.expect("semaphore");
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut conn = TcpStream::connect(addr).await?;
                    let mut line = String::new();
                    conn.read_to_string(&mut line).await?;
                    Ok::<_, std::io::Error>(line)
                })
                .await;
                drop(slot);
                match result {
                    Ok(Ok(line)) if line.starts_with("up ready 100% #role=primary") => {
                        Ok(t.elapsed())
                    }
                    Ok(Ok(line)) => Err(format!("unexpected line {line:?}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no reply within 10s".to_string()),
                }
            }));
        }
        let mut times = Vec::with_capacity(CONNECTIONS);
        let mut failures = Vec::new();
        for t in tasks {
            match t.await.expect("client task") {
                Ok(d) => times.push(d),
                Err(e) => failures.push(e),
            }
        }
        (times, failures)
    });
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), times[times.len() - 1]);
    println!(
        "{CONNECTIONS} agent checks, {AT_ONCE} at a time: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    // A sanity bound only: this runs on a shared 2-core machine.
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
    // Still answering after the burst.
    assert!(agent.line().starts_with("up ready"));
}
