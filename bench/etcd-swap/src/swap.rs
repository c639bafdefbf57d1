//! The `leader` and `txn` modes: how long a primary change written to etcd takes to reach the
//! data path, and whether any connection reaches the demoted member after that.
//!
//! Two in-process backends write their name on connect; they are members `m0` (primary) and
//! `m1` (replica) with `leader` = `m0`. rolelb runs one `role primary` + `role-source etcd`
//! listener discovering them. Each change moves the primary to the other member — `leader`:
//! a put of the `leader` key; `txn`: one transaction that puts the old primary's member value
//! with `role: replica`, the new one's with `role: primary`, and the `leader` key — then opens
//! connections back to back until one is answered by the new primary (the span from the etcd
//! write returning to that answer is recorded), then opens [`AFTER`] more, each of which must
//! be answered by the new primary too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use etcd_client::{Client, Txn, TxnOp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Mode, Options, ms, percentile};

/// Connections opened after the first one on the new primary, to see that none reaches the
/// demoted member.
const AFTER: usize = 10;

const PREFIX: &str = "/bench/pool";

/// A backend that writes its name on every connection and closes.
async fn backend(name: &'static str) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// The name the backend behind `addr` sends, through rolelb.
async fn who(addr: SocketAddr) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).trim().to_owned())
}

async fn wait_for(addr: SocketAddr, name: &str, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if who(addr).await.as_deref() == Some(name) {
            return Ok(Instant::now());
        }
    }
    bail!("{addr} not answered by {name} within {limit:?}")
}

fn member(port: u16, role: &str) -> String {
    format!(r#"{{"host": "127.0.0.1", "port": {port}, "role": "{role}"}}"#)
}

/// Moves the primary from `old` to `new` as `mode` says.
async fn switch(
    etcd: &mut Client,
    mode: Mode,
    (old, old_port): (&str, u16),
    (new, new_port): (&str, u16),
) -> Result<()> {
    let leader = format!("{PREFIX}/leader");
    if mode == Mode::Txn {
        let txn = Txn::new().and_then([
            TxnOp::put(
                format!("{PREFIX}/members/{old}"),
                member(old_port, "replica"),
                None,
            ),
            TxnOp::put(
                format!("{PREFIX}/members/{new}"),
                member(new_port, "primary"),
                None,
            ),
            TxnOp::put(leader, new, None),
        ]);
        etcd.txn(txn).await?;
    } else {
        etcd.put(leader, new, None).await?;
    }
    Ok(())
}

/// Runs `--changes` primary changes and prints the spans.
pub async fn run(o: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut etcd = super::start_etcd(&o.etcd, dir.path(), super::LoadPlace::Shared).await?;
    let ports = [backend("m0").await?, backend("m1").await?];
    let names = ["m0", "m1"];
    for (i, (name, port)) in names.iter().zip(ports).enumerate() {
        let role = if i == 0 { "primary" } else { "replica" };
        etcd.client
            .put(format!("{PREFIX}/members/{name}"), member(port, role), None)
            .await?;
    }
    etcd.client
        .put(format!("{PREFIX}/leader"), "m0", None)
        .await?;

    let port = super::free_port()?;
    let nbthread = o.nbthread.unwrap_or(1);
    let _rolelb = super::start_rolelb(
        &o.rolelb,
        dir.path(),
        &format!(
            "global\n    nbthread {nbthread}\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\
             etcd main\n    endpoints {}\n\
             listen writes\n    bind 127.0.0.1:{port}\n    role primary\n    role-source etcd\n    discover etcd main path {PREFIX}\n",
            etcd.endpoint
        ),
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr, "m0", Duration::from_secs(10))
        .await
        .map_err(|e| e.context("rolelb did not start routing to m0"))?;

    let mut spans = Vec::with_capacity(o.changes);
    let mut to_demoted = 0;
    let mut refused = 0;
    for i in 0..o.changes {
        let (old, new) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        switch(
            &mut etcd.client,
            o.mode,
            (names[old], ports[old]),
            (names[new], ports[new]),
        )
        .await?;
        let written = Instant::now();
        let routed = wait_for(addr, names[new], Duration::from_secs(60)).await?;
        spans.push(routed - written);
        for _ in 0..AFTER {
            match who(addr).await {
                Some(name) if name == names[new] => {}
                Some(_) => to_demoted += 1,
                None => refused += 1,
            }
        }
    }
    spans.sort();
    let what = match o.mode {
        Mode::Txn => "switchover as one etcd txn (demote, promote, leader key)",
        _ => "etcd leader key change",
    };
    println!(
        "{what} → first connection routed to the new primary, {} changes (nbthread {nbthread}):",
        spans.len()
    );
    println!(
        "  p50 {}   p90 {}   p99 {}   max {}   min {}",
        ms(percentile(&spans, 0.50)),
        ms(percentile(&spans, 0.90)),
        ms(percentile(&spans, 0.99)),
        ms(spans[spans.len() - 1]),
        ms(spans[0]),
    );
    println!(
        "  after the swap: {to_demoted} of {} connections reached the demoted member, {refused} refused",
        spans.len() * AFTER
    );
    Ok(())
}
