//! The build is a pure function of the configuration and the live state it reads: building
//! twice changes no live state and closes no session, the same inputs make the same table,
//! and what a new table decides (the writer hand-over, etcd's demotion, the role-conflict
//! flag, downtime) happens when it is swapped in.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::live::KillSwitch;

use super::*;
use crate::table::testing::{DEFAULT_MAXCONN, Swaps};

/// Three `role primary` backends, each with a change pending that the next swap acts on.
struct Pending {
    swaps: Swaps,
    /// The table in force: in `w` server a is the writer (d is `disabled`), in `c` x is, in
    /// `be` etcd names m1 primary.
    current: Arc<Table>,
    /// A session on every server of `current`, by `backend/server`.
    sessions: Vec<(String, Arc<KillSwitch>)>,
    /// The next table's inputs: the checks moved w's primary to b and see y primary too
    /// (a conflict in c), and etcd moved be's primary to m2.
    next: Prepared,
}

fn pending() -> Pending {
    let pg = "    role-check pgsql user monitor\n";
    let mut swaps = Swaps::new();
    let mut etcd = Etcd::new(&format!(
        "backend w\n    role primary\n{pg}    server a 127.0.0.1:1\n    server b 127.0.0.1:2\n\
         \x20   server d 127.0.0.1:4 disabled\n\
         backend c\n    role primary\n{pg}    server x 127.0.0.1:5\n    server y 127.0.0.1:6\n\
         backend be\n    role primary\n    role-source etcd\n"
    ));
    let first = etcd.put(&[("m1", 7, P, READY), ("m2", 8, R, READY)]);
    let t = swaps.swap(&first);
    let role = |b: &str, s: &str, role: NodeRole| server(&t, b, s).live.set_role(role);
    role("w", "a", NodeRole::Primary);
    role("w", "b", NodeRole::Replica);
    role("c", "x", NodeRole::Primary);
    role("c", "y", NodeRole::Replica);
    let current = swaps.swap(&first);
    assert_eq!(writer(&current, "w"), Some("a"));
    assert_eq!(writer(&current, "c"), Some("x"));
    assert_eq!(writer(&current, "be"), Some("m1"));
    let sessions = servers(&current)
        .map(|(b, s)| (format!("{b}/{}", s.name()), s.live.kill_switch()))
        .collect();
    let role = |b: &str, s: &str, role: NodeRole| server(&current, b, s).live.set_role(role);
    role("w", "a", NodeRole::Replica);
    role("w", "b", NodeRole::Primary);
    role("c", "y", NodeRole::Primary);
    let next = etcd.put(&[("m1", 7, R, READY), ("m2", 8, P, READY)]);
    let next = prepare(next, &swaps.registry, DEFAULT_MAXCONN);
    Pending {
        swaps,
        current,
        sessions,
        next,
    }
}

fn server<'a>(t: &'a Table, backend: &str, name: &str) -> &'a ServerRt {
    let be = &t.backends[backend];
    let s = be.servers.iter().find(|s| s.name() == name);
    s.unwrap_or_else(|| panic!("no server {backend}/{name}"))
}

/// Every server of `t` with its backend's name, backends by name.
fn servers(t: &Table) -> impl Iterator<Item = (&str, &ServerRt)> {
    let mut backends: Vec<&Arc<BackendRt>> = t.backends.values().collect();
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    backends
        .into_iter()
        .flat_map(|be| be.servers.iter().map(|s| (be.name.as_str(), s)))
}

/// The writer a table names in `backend`.
fn writer<'a>(t: &'a Table, backend: &str) -> Option<&'a str> {
    let be = &t.backends[backend];
    be.writer.map(|i| be.servers[i].name())
}

/// The sessions of `p` that were closed, by `backend/server`.
fn closed(p: &Pending) -> Vec<&str> {
    p.sessions
        .iter()
        .filter(|(_, token)| token.is_tripped())
        .map(|(name, _)| name.as_str())
        .collect()
}

/// Every piece of live state of `t`'s backends and servers a build could write, as text.
fn snapshot(t: &Table, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    let mut backends: Vec<&Arc<BackendRt>> = t.backends.values().collect();
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    for be in backends {
        let l = &be.live;
        let writer = l
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        out.push(format!(
            "{}: conflict {} writer {writer:?} down {} {:?} cursors {} {} sessions {} queued {}",
            be.name,
            l.role_conflict.load(Ordering::Relaxed),
            l.downtime.transitions(),
            l.downtime.total(now),
            l.cursor.pos.load(Ordering::Relaxed),
            l.backup_cursor.pos.load(Ordering::Relaxed),
            l.sessions.load(Ordering::Relaxed),
            l.queued.load(Ordering::Relaxed),
        ));
    }
    for (b, s) in servers(t) {
        let l = &s.live;
        out.push(format!(
            "{b}/{}: admin {:?} agent {:?} {:?} etcd {:?} {:?} health {:?} check {:?} role {:?} \
             lag {} {} {} disabled {} weight {:?} changed {:?} down {:?} ramp {:?} sessions {}",
            s.name(),
            l.admin(),
            l.agent_admin(),
            l.agent_health(),
            l.etcd_admin(),
            l.etcd_role(),
            l.health(),
            l.check_health(),
            l.role(),
            l.lag_ok(),
            l.lag_bytes.load(Ordering::Relaxed),
            l.lag_ms.load(Ordering::Relaxed),
            l.config_disabled(),
            l.operator_weight(),
            l.changed_at(),
            l.downtime(now),
            l.ramp(Some(Duration::from_secs(3600)), now),
            l.sessions.load(Ordering::Relaxed),
        ));
    }
    out
}

/// What a table routes by: each backend's pools, conflict and writer, and each server's
/// weights and limits.
fn shape(t: &Table) -> Vec<String> {
    let mut out: Vec<String> = t
        .backends
        .values()
        .map(|be| {
            format!(
                "{}: active {:?} backup {:?} conflict {:?} writer {:?}",
                be.name, be.active.members, be.backup.members, be.conflict, be.writer
            )
        })
        .collect();
    out.sort();
    for (b, s) in servers(t) {
        out.push(format!(
            "{b}/{}: weight {} eweight {} maxconn {:?} ramp {:?} live {:p}",
            s.name(),
            s.weight,
            s.eweight,
            s.maxconn,
            s.ramp,
            Arc::as_ptr(&s.live)
        ));
    }
    out
}

#[test]
fn building_twice_from_the_same_inputs_changes_no_live_state() {
    let p = pending();
    let now = Instant::now();
    let entries = p.swaps.registry.servers.lock().expect("lock").len();
    let before = snapshot(&p.current, now);
    let first = Table::build(&p.next, 3, now);
    let second = Table::build(&p.next, 3, now);
    assert_eq!(snapshot(&p.current, now), before);
    assert_eq!(snapshot(&first, now), before, "the same live entries");
    assert_eq!(shape(&first), shape(&second), "same inputs, same table");
    assert_eq!(
        p.swaps.registry.servers.lock().expect("lock").len(),
        entries
    );
    // What the swap must do is in the table, not yet in live state.
    assert_eq!(writer(&first, "w"), Some("b"));
    assert_eq!(writer(&first, "c"), None);
    assert_eq!(first.backends["c"].conflict, [0, 1]);
    assert_eq!(writer(&first, "be"), Some("m2"));
    assert!(
        !p.current.backends["c"]
            .live
            .role_conflict
            .load(Ordering::Relaxed)
    );
}

#[test]
fn a_build_closes_no_session_and_the_swap_closes_the_demoted_writers() {
    let p = pending();
    let next = Arc::new(Table::build(&p.next, 3, Instant::now()));
    Table::build(&p.next, 3, Instant::now());
    assert_eq!(closed(&p), Vec::<&str>::new(), "a build closes nothing");
    next.after_swap(&p.current);
    // w: the hand-over closes every server but b; be: etcd moved the primary to m2; c: a
    // conflict refuses new connections but closes nothing.
    assert_eq!(closed(&p), ["be/m1", "w/a", "w/d"]);
    let writer = |b: &str| {
        let w = next.backends[b].live.writer.lock();
        w.unwrap_or_else(PoisonError::into_inner).clone()
    };
    assert_eq!(writer("w").as_deref(), Some("b"));
    assert_eq!(writer("be").as_deref(), Some("m2"));
    assert_eq!(
        writer("c").as_deref(),
        Some("x"),
        "no new writer in a conflict"
    );
    // A second swap to an equal table hands nothing over again.
    let again = Table::build(
        &prepare(p.next.config().clone(), &p.swaps.registry, DEFAULT_MAXCONN),
        4,
        Instant::now(),
    );
    let fresh: Vec<Arc<KillSwitch>> = servers(&next).map(|(_, s)| s.live.kill_switch()).collect();
    again.after_swap(&next);
    assert!(fresh.iter().all(|t| !t.is_tripped()));
}

#[test]
fn the_swap_raises_and_clears_the_conflict_flag_and_counts_downtime() {
    let p = pending();
    let c = &p.current.backends["c"].live;
    let next = Table::build(&p.next, 3, Instant::now());
    assert!(!c.role_conflict.load(Ordering::Relaxed));
    assert_eq!(c.downtime.transitions(), 0);
    next.after_swap(&p.current);
    assert!(c.role_conflict.load(Ordering::Relaxed));
    assert_eq!(c.downtime.transitions(), 1, "c has no usable server");
    // y steps down: the next swap clears the flag and the backend is up again.
    server(&next, "c", "y").live.set_role(NodeRole::Replica);
    let resolved = Table::build(
        &prepare(p.next.config().clone(), &p.swaps.registry, DEFAULT_MAXCONN),
        4,
        Instant::now(),
    );
    assert!(
        c.role_conflict.load(Ordering::Relaxed),
        "not before the swap"
    );
    resolved.after_swap(&next);
    assert!(!c.role_conflict.load(Ordering::Relaxed));
    assert!(c.downtime.total(Instant::now()) > Duration::ZERO);
    assert_eq!(writer(&resolved, "c"), Some("x"));
}
