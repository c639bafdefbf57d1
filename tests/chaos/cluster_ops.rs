//! The chaos cluster's controls for the faults beyond PostgreSQL's own
//! (`tests/chaos/outages.rs`): its own etcd stopped, frozen, changed behind rolelb's back and
//! compacted; a second rolelb started, killed and restarted; a PgBouncer paused and resumed;
//! a replica's replay lag read; a crashed old primary rewound into a replica of the new one.
//! A child of `cluster.rs`, so it reaches the cluster's fields.

use std::thread;
use std::time::{Duration, SystemTime};

use etcd_client::Client;

use super::{Cluster, Front, SecondLb, guarded_config};
use crate::audit::{Event, Fact, NodeId};
use crate::common::{
    Etcd, PG_BIN, PSQL_BIN, Rolelb, command, etcd_ctl_ok, etcd_put, etcd_revision, free_port,
    require_bin, try_psql, wait_until,
};

impl Cluster {
    /// Hands the cluster the etcd server it was built against, for a schedule that stops it.
    pub fn own_etcd(&mut self, etcd: Etcd) {
        assert_eq!(
            etcd.endpoint(),
            self.endpoint,
            "not the etcd the cluster uses"
        );
        self.own_etcd = Some(etcd);
    }

    fn etcd_server(&mut self) -> &mut Etcd {
        self.own_etcd
            .as_mut()
            .expect("a schedule that stops etcd runs against an etcd of its own")
    }

    /// Stops the schedule's etcd (SIGTERM, waiting for it to exit); its data stays.
    pub fn stop_etcd(&mut self) {
        self.etcd_server().stop();
    }

    /// Starts the schedule's etcd again on its data and ports, and reconnects the test's client.
    pub fn restart_etcd(&mut self) {
        self.etcd_server().restart();
        self.etcd = self
            .rt
            .block_on(Client::connect([self.endpoint.clone()], None))
            .expect("reconnecting to etcd");
    }

    /// Sends `sig` to the schedule's etcd server (SIGSTOP, SIGCONT).
    pub fn signal_etcd(&mut self, sig: nix::sys::signal::Signal) {
        let port = self.etcd_server().port();
        let pid = etcd_pid(port).unwrap_or_else(|| panic!("no etcd process serves port {port}"));
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("kill {sig} etcd: {e}"));
    }

    /// While etcd is stopped: moves the primary from `old` to `new` (three puts, the `leader`
    /// last) on a second etcd process on the same data that rolelb does not watch, and
    /// compacts to the revision that leaves; rolelb's watch, resumed after its last revision,
    /// then starts in compacted history and must list again.
    pub fn offline_switch_and_compact(&mut self, old: NodeId, new: NodeId) {
        let (old_key, old_value) = self.member(old, "replica");
        let (new_key, new_value) = self.member(new, "primary");
        let leader_key = format!("{}/leader", self.prefix);
        let mut etcd = self.own_etcd.take().expect("the schedule's own etcd");
        let mut changed = None;
        etcd.offline(|endpoint| {
            etcd_put(endpoint, &old_key, &old_value);
            etcd_put(endpoint, &new_key, &new_value);
            let start = SystemTime::now();
            etcd_put(endpoint, &leader_key, &Cluster::name(new));
            changed = Some((start, SystemTime::now()));
            compact(endpoint);
        });
        self.own_etcd = Some(etcd);
        let (start, end) = changed.expect("the offline change ran");
        self.events.push(Event {
            start,
            end,
            fact: Fact::Leader(new),
        });
    }

    /// `etcdctl compact` to the current revision, while rolelb watches.
    pub fn compact_etcd(&self) {
        compact(&self.endpoint);
    }

    /// Starts a second rolelb on the same etcd prefix and nodes, with listeners of its own;
    /// returns its write port once a write through it lands on `n1`.
    pub fn start_second_lb(&mut self) -> u16 {
        let (write_port, read_port) = (free_port(), free_port());
        let cfg = guarded_config(&self.endpoint, &self.prefix, write_port, read_port);
        self.second = Some(SecondLb {
            lb: Some(Rolelb::start(&cfg)),
            cfg,
            write_port,
        });
        self.wait_port_writes_on(write_port, 0);
        write_port
    }

    /// SIGKILLs rolelb instance `which` (0: the first, 1: the second).
    pub fn kill_lb(&mut self, which: usize) {
        use nix::sys::signal::Signal;
        let lb = match which {
            0 => match self.lb.take() {
                Some(Front::Rolelb(lb)) => Some(lb),
                other => {
                    self.lb = other;
                    None
                }
            },
            _ => self.second.as_mut().and_then(|s| s.lb.take()),
        };
        if let Some(mut lb) = lb {
            lb.signal(Signal::SIGKILL);
            lb.stop();
        }
    }

    /// Starts rolelb instance `which` again on its config (same ports), if it was killed.
    pub fn restart_lb(&mut self, which: usize) {
        match which {
            0 if self.lb.is_none() => self.lb = Some(Front::Rolelb(Rolelb::start(&self.cfg))),
            0 => {}
            _ => {
                if let Some(second) = self.second.as_mut().filter(|s| s.lb.is_none()) {
                    second.lb = Some(Rolelb::start(&second.cfg));
                }
            }
        }
    }

    /// `PAUSE` on node `n`'s PgBouncer admin console. PgBouncer holds new logins at once but
    /// answers only when every server connection is released, which in session pooling waits
    /// for clients that stay (rolelb's role check keeps its connection): so the command is
    /// left running, and [`Cluster::resume_bouncer`] ends it.
    pub fn pause_bouncer(&mut self, n: NodeId) {
        let child = self
            .bouncer_admin(n, "PAUSE")
            .spawn()
            .expect("running psql on PgBouncer's admin console");
        // psql connects and sends at once; PgBouncer holds new logins from then on. A PAUSE
        // still waiting is in force; one that ended must have ended well.
        thread::sleep(Duration::from_millis(300));
        let mut child = child;
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "PAUSE on {}'s PgBouncer failed",
                Cluster::name(n)
            );
        }
        self.pausing = Some(child);
    }

    /// `RESUME` on node `n`'s PgBouncer admin console; ends the `PAUSE` command.
    pub fn resume_bouncer(&mut self, n: NodeId) {
        let out = self
            .bouncer_admin(n, "RESUME")
            .output()
            .expect("running psql on PgBouncer's admin console");
        assert!(
            out.status.success(),
            "RESUME on {}'s PgBouncer: {}",
            Cluster::name(n),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut child) = self.pausing.take() {
            let ended = wait_until(Duration::from_secs(5), || {
                child.try_wait().ok().flatten().is_some()
            });
            if !ended {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// psql running `command` on node `n`'s PgBouncer admin console (unaligned, tuples only).
    fn bouncer_admin(&self, n: NodeId, command: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(require_bin(PSQL_BIN));
        cmd.args(["-X", "-w", "-A", "-t", "-q", "-U", "postgres"])
            .args([
                "-h",
                &self.nodes[n].host(),
                "-d",
                "pgbouncer",
                "-p",
                &self.nodes[n].bouncer_port().to_string(),
            ])
            .args(["-c", command])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// The replay delay node `n` reports in time, as rolelb's role check measures it.
    pub fn replay_lag(&self, n: NodeId) -> Duration {
        let secs = try_psql(
            self.nodes[n].pg.port(),
            "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
             ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END",
        )
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or_default()
    }

    /// Brings the crashed `old` primary back as a streaming replica of `new`: `pg_rewind`
    /// against `new` (a fresh `pg_basebackup` if the rewind fails), its own port kept, started,
    /// and its etcd member written as a replica. Returns whether the rewind worked.
    pub fn rejoin(&mut self, old: NodeId, new: NodeId) -> bool {
        let data = self.nodes[old]
            .pg
            .log_path()
            .parent()
            .expect("a data directory's parent")
            .join("data");
        let home = data
            .parent()
            .expect("a data directory's parent")
            .to_path_buf();
        let port = self.nodes[old].pg.port();
        let source = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.nodes[new].pg.port()
        );
        // A just-promoted source must write its new timeline into its control file first,
        // else pg_rewind finds both on the same timeline and changes nothing.
        self.nodes[new].pg.psql("CHECKPOINT");
        let rewind = command(&require_bin(format!("{PG_BIN}/pg_rewind")), true, &home)
            .arg("--target-pgdata")
            .arg(&data)
            .args(["--source-server", &source, "-R", "--no-sync"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .is_ok_and(|out| out.status.success());
        if !rewind {
            let _ = std::fs::remove_dir_all(&data);
            let out = command(&require_bin(format!("{PG_BIN}/pg_basebackup")), true, &home)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.nodes[new].pg.port().to_string(),
                ])
                .args(["-U", "postgres", "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
                .output()
                .expect("running pg_basebackup");
            assert!(
                out.status.success(),
                "pg_basebackup of {} from {}: {}",
                Cluster::name(old),
                Cluster::name(new),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Both copy the source's configuration, with its port: a later line wins.
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("reading postgresql.conf");
        text += &format!("port = {port}\n");
        std::fs::write(&conf, text).expect("writing postgresql.conf");
        self.nodes[old].pg.start();
        assert!(
            self.nodes[old].pg.is_replica(),
            "{} came back as a primary",
            Cluster::name(old)
        );
        self.put_member(old, "replica");
        rewind
    }
}

/// `etcdctl compact` at `endpoint` to its current revision.
fn compact(endpoint: &str) {
    let revision = etcd_revision(endpoint).to_string();
    etcd_ctl_ok(endpoint, &["compact", &revision]);
}

/// The etcd server this test started on client port `port` (from `/proc/PID/cmdline`).
fn etcd_pid(port: u16) -> Option<nix::unistd::Pid> {
    let url = format!("http://127.0.0.1:{port}");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_etcd = args.first()?.ends_with(b"/etcd");
        let serves = args
            .windows(2)
            .any(|w| w[0] == b"--listen-client-urls" && w[1] == url.as_bytes());
        (is_etcd && serves).then_some(nix::unistd::Pid::from_raw(pid))
    })
}
