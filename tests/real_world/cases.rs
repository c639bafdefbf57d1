//! The corpus of `tests/real_world.rs`: one [`Case`] per file of `tests/configs/real-world/`,
//! saying what each environment variable of the file stands for, the server states both
//! proxies must show before clients connect, and the clients to send.
//!
//! Longer than 700 lines on purpose: it is data, one entry per config of the corpus, and
//! splitting it would separate cases that are read side by side.

/// What one environment variable of a config stands for.
#[derive(Clone, Copy)]
pub enum Env {
    /// A free port for a `bind` line.
    Port,
    /// `127.0.0.1:PORT` of the stand-in server of that name.
    Server(&'static str),
    /// `127.0.0.1`, the host of every stand-in.
    Host,
    /// The port of the stand-in server of that name.
    PortOf(&'static str),
    /// The port of a health-check peer speaking this.
    Check(Speaks),
    /// A port nothing listens on (a node that is gone).
    Dead,
    /// The path of the runtime socket, in the run's own directory.
    Socket,
    /// This text.
    Text(&'static str),
    /// `127.0.0.1:PORT` of a DNS server (dnsmasq) answering these names with 127.0.0.1.
    Dns(&'static [&'static str]),
    /// The path of an executable file with this content (an external-check program).
    Script(&'static str),
}

/// What a check responder speaks.
#[derive(Clone, Copy)]
pub enum Speaks {
    /// HTTP: 200 for these paths, 503 for any other (a Patroni REST API, clustercheck).
    Http(&'static [&'static str]),
    /// The same over TLS, with a self-signed certificate (Patroni's `restapi.certfile`).
    Https(&'static [&'static str]),
    /// MySQL: the greeting, then an OK packet once the client's login arrives.
    Mysql,
    /// Writes this text as soon as the check connects, then closes (an xinetd script).
    Banner(&'static str),
    /// RESP: `+PONG` to PING, `role:master` or `role:slave` to INFO, `+OK` to QUIT.
    Redis { master: bool },
}

/// One config of the corpus and how to run it.
pub struct Case {
    pub file: &'static str,
    pub env: &'static [(&'static str, Env)],
    /// `(proxy, server, status)` as `show stat` must show them before clients connect.
    pub settled: &'static [(&'static str, &'static str, &'static str)],
    /// `(port variable, source 127.0.0.X)`, in order; every connection stays open until the
    /// last one has its answer, so `leastconn` sees them all.
    pub clients: &'static [(&'static str, u8)],
    /// Each client first sends a PROXY v1 header naming 10.0.0.X (its own X) as the client.
    pub proxy_header: bool,
    /// A difference from HAProxy 2.6 this config shows and rolelb does not fix yet: the two
    /// transcripts must then differ, but only in order (the same servers as often).
    pub known_gap: Option<&'static str>,
    /// `(port variable, path, Basic credentials in base64)` of a stats page to ask, without
    /// and then with the credentials, after the clients.
    pub stats_page: Option<(&'static str, &'static str, &'static str)>,
}

/// The check interval the tests give the configs that read `CHECK_INTER`.
const FAST_CHECKS: (&str, Env) = ("CHECK_INTER", Env::Text("200ms"));

pub const CASES: &[Case] = &[
    Case {
        file: "patroni.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("STATS_PORT", Env::Port),
            ("PRIMARY_PORT", Env::Port),
            ("REPLICA_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            ("PG2", Env::Server("pg2")),
            ("PG3", Env::Server("pg3")),
            (
                "PG1_API",
                Env::Check(Speaks::Http(&["/primary", "/read-write"])),
            ),
            (
                "PG2_API",
                Env::Check(Speaks::Http(&["/replica", "/read-only"])),
            ),
            (
                "PG3_API",
                Env::Check(Speaks::Http(&["/replica", "/read-only"])),
            ),
            FAST_CHECKS,
        ],
        settled: &[
            ("primary", "postgresql_1", "UP"),
            ("primary", "postgresql_2", "DOWN"),
            ("primary", "postgresql_3", "DOWN"),
            ("replicas", "postgresql_1", "DOWN"),
            ("replicas", "postgresql_2", "UP"),
            ("replicas", "postgresql_3", "UP"),
        ],
        clients: &[
            ("PRIMARY_PORT", 2),
            ("REPLICA_PORT", 2),
            ("REPLICA_PORT", 3),
            ("PRIMARY_PORT", 3),
            ("REPLICA_PORT", 4),
            ("REPLICA_PORT", 5),
            ("PRIMARY_PORT", 4),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: Some(("STATS_PORT", "/", "")),
    },
    Case {
        file: "pgbouncer.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PGBOUNCER_PORT", Env::Port),
            ("PGB1", Env::Server("pgbouncer1")),
            ("PGB2", Env::Server("pgbouncer2")),
            FAST_CHECKS,
        ],
        settled: &[
            ("pgbouncers", "pgbouncer1", "UP"),
            ("pgbouncers", "pgbouncer2", "UP"),
        ],
        clients: &[
            ("PGBOUNCER_PORT", 2),
            ("PGBOUNCER_PORT", 3),
            ("PGBOUNCER_PORT", 4),
            ("PGBOUNCER_PORT", 5),
            ("PGBOUNCER_PORT", 6),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "galera.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("WRITER_PORT", Env::Port),
            ("READER_PORT", Env::Port),
            ("NODE1", Env::Server("node1")),
            ("NODE2", Env::Server("node2")),
            ("NODE3", Env::Server("node3")),
            ("NODE1_CHECK", Env::Check(Speaks::Mysql)),
            ("NODE2_CHECK", Env::Check(Speaks::Mysql)),
            ("NODE3_CHECK", Env::Check(Speaks::Mysql)),
            FAST_CHECKS,
        ],
        settled: &[
            ("pxc-writer", "node1", "UP"),
            ("pxc-writer", "node2", "UP"),
            ("pxc-writer", "node3", "UP"),
            ("pxc-reader", "node1", "UP"),
            ("pxc-reader", "node2", "UP"),
            ("pxc-reader", "node3", "UP"),
        ],
        clients: &[
            ("WRITER_PORT", 2),
            ("WRITER_PORT", 3),
            ("WRITER_PORT", 4),
            ("READER_PORT", 2),
            ("READER_PORT", 3),
            ("READER_PORT", 4),
            ("READER_PORT", 5),
            ("WRITER_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "mysql-replicas.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("WRITE_PORT", Env::Port),
            ("READ_PORT", Env::Port),
            ("PRIMARY", Env::Server("primary")),
            ("REPLICA1", Env::Server("replica1")),
            ("REPLICA2", Env::Server("replica2")),
            ("REPLICA3", Env::Server("replica3")),
            FAST_CHECKS,
        ],
        settled: &[
            ("mysql_replicas", "mysql-replica1", "UP"),
            ("mysql_replicas", "mysql-replica2", "UP"),
            ("mysql_replicas", "mysql-replica3", "UP"),
            ("mysql_primary", "mysql-primary", "UP"),
        ],
        clients: &[
            ("WRITE_PORT", 2),
            ("READ_PORT", 2),
            ("READ_PORT", 3),
            ("READ_PORT", 4),
            ("READ_PORT", 5),
            ("READ_PORT", 6),
            ("WRITE_PORT", 3),
            ("READ_PORT", 7),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "container-env.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PORT", Env::Port),
            ("DB_HOST", Env::Host),
            ("DB_PORT", Env::PortOf("managed-db")),
            FAST_CHECKS,
        ],
        settled: &[("db", "db", "UP")],
        clients: &[("PORT", 2), ("PORT", 3)],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "cockroachdb.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("SQL_PORT", Env::Port),
            ("CRDB1", Env::Server("crdb1")),
            ("CRDB2", Env::Server("crdb2")),
            ("CRDB3", Env::Server("crdb3")),
            ("CRDB1_HTTP", Env::Check(Speaks::Http(&["/health?ready=1"]))),
            ("CRDB2_HTTP", Env::Check(Speaks::Http(&["/health?ready=1"]))),
            ("CRDB3_HTTP", Env::Check(Speaks::Http(&[]))),
            FAST_CHECKS,
        ],
        settled: &[
            ("psql", "cockroach1", "UP"),
            ("psql", "cockroach2", "UP"),
            ("psql", "cockroach3", "DOWN"),
        ],
        clients: &[
            ("SQL_PORT", 2),
            ("SQL_PORT", 3),
            ("SQL_PORT", 4),
            ("SQL_PORT", 5),
            ("SQL_PORT", 6),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "patroni-replica-fallback.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("RW_PORT", Env::Port),
            ("RO_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            ("PG2", Env::Server("pg2")),
            (
                "PG1_API",
                Env::Check(Speaks::Http(&["/primary", "/read-write"])),
            ),
            ("PG2_API", Env::Check(Speaks::Http(&["/read-only"]))),
            FAST_CHECKS,
        ],
        settled: &[
            ("pg_primary", "node1", "UP"),
            ("pg_primary", "node2", "DOWN"),
            ("pg_replicas", "node1", "DOWN"),
            ("pg_replicas", "node2", "DOWN"),
        ],
        clients: &[
            ("RW_PORT", 2),
            ("RO_PORT", 2),
            ("RO_PORT", 3),
            ("RW_PORT", 3),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "tidb.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("STATS_PORT", Env::Port),
            ("TIDB_PORT", Env::Port),
            ("TIDB1", Env::Server("tidb1")),
            ("TIDB2", Env::Server("tidb2")),
            ("TIDB3", Env::Server("tidb3")),
            FAST_CHECKS,
        ],
        settled: &[
            ("tidb-cluster", "tidb-1", "UP"),
            ("tidb-cluster", "tidb-2", "UP"),
            ("tidb-cluster", "tidb-3", "UP"),
        ],
        clients: &[
            ("TIDB_PORT", 2),
            ("TIDB_PORT", 3),
            ("TIDB_PORT", 4),
            ("TIDB_PORT", 5),
            ("TIDB_PORT", 6),
            ("TIDB_PORT", 7),
            ("TIDB_PORT", 8),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: Some(("STATS_PORT", "/haproxy", "YWRtaW46cGluZ2NhcDEyMw==")),
    },
    Case {
        file: "stats-userlist.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("STATS_PORT", Env::Port),
            ("MYSQL_PORT", Env::Port),
            ("DB1", Env::Server("db1")),
            ("DB2", Env::Server("db2")),
            FAST_CHECKS,
        ],
        settled: &[("mysql", "db1", "UP"), ("mysql", "db2", "UP")],
        clients: &[
            ("MYSQL_PORT", 2),
            ("MYSQL_PORT", 3),
            ("MYSQL_PORT", 4),
            ("MYSQL_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: Some(("STATS_PORT", "/stats", "YWRtaW46czNjcmV0")),
    },
    Case {
        file: "acl-allowlist.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PG_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            FAST_CHECKS,
        ],
        settled: &[("postgres_primary", "pg1", "UP")],
        clients: &[
            ("PG_PORT", 2),
            ("PG_PORT", 3),
            ("PG_PORT", 5),
            ("PG_PORT", 9),
            ("PG_PORT", 4),
            ("PG_PORT", 1),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "primary-standby-failover.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PG_PORT", Env::Port),
            ("PRIMARY", Env::Dead),
            ("STANDBY", Env::Server("standby")),
            FAST_CHECKS,
        ],
        settled: &[
            ("be_primary", "primary", "DOWN"),
            ("be_standby", "standby", "UP"),
        ],
        clients: &[("PG_PORT", 2), ("PG_PORT", 3)],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "nlb-accept-proxy.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("NLB_PORT", Env::Port),
            ("R1", Env::Server("reader1")),
            ("R2", Env::Server("reader2")),
            ("R3", Env::Server("reader3")),
            FAST_CHECKS,
        ],
        settled: &[
            ("mysql_readers", "reader1", "UP"),
            ("mysql_readers", "reader2", "UP"),
            ("mysql_readers", "reader3", "UP"),
        ],
        clients: &[
            ("NLB_PORT", 2),
            ("NLB_PORT", 3),
            ("NLB_PORT", 4),
            ("NLB_PORT", 5),
            ("NLB_PORT", 6),
            ("NLB_PORT", 7),
            ("NLB_PORT", 8),
            ("NLB_PORT", 9),
            ("NLB_PORT", 10),
            ("NLB_PORT", 11),
        ],
        proxy_header: true,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "pgpool-source-hash.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PGPOOL_PORT", Env::Port),
            ("P1", Env::Server("pgpool1")),
            ("P2", Env::Server("pgpool2")),
            ("P3", Env::Server("pgpool3")),
            ("P4", Env::Server("pgpool4")),
            FAST_CHECKS,
        ],
        settled: &[
            ("pgpool", "pgpool1", "UP"),
            ("pgpool", "pgpool2", "UP"),
            ("pgpool", "pgpool3", "UP"),
            ("pgpool", "pgpool4", "UP"),
        ],
        clients: &[
            ("PGPOOL_PORT", 2),
            ("PGPOOL_PORT", 3),
            ("PGPOOL_PORT", 4),
            ("PGPOOL_PORT", 5),
            ("PGPOOL_PORT", 6),
            ("PGPOOL_PORT", 7),
            ("PGPOOL_PORT", 8),
            ("PGPOOL_PORT", 9),
            ("PGPOOL_PORT", 10),
            ("PGPOOL_PORT", 11),
            ("PGPOOL_PORT", 12),
            ("PGPOOL_PORT", 2),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "retries-redispatch.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("MYSQL_PORT", Env::Port),
            ("GONE", Env::Dead),
            ("M2", Env::Server("m2")),
            ("M3", Env::Server("m3")),
            FAST_CHECKS,
        ],
        settled: &[],
        clients: &[
            ("MYSQL_PORT", 2),
            ("MYSQL_PORT", 3),
            ("MYSQL_PORT", 4),
            ("MYSQL_PORT", 5),
            ("MYSQL_PORT", 6),
            ("MYSQL_PORT", 7),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "redis-sentinel.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("REDIS_PORT", Env::Port),
            ("REDIS1", Env::Server("redis1")),
            ("REDIS2", Env::Server("redis2")),
            ("REDIS3", Env::Server("redis3")),
            ("REDIS1_CHECK", Env::Check(Speaks::Redis { master: false })),
            ("REDIS2_CHECK", Env::Check(Speaks::Redis { master: true })),
            ("REDIS3_CHECK", Env::Check(Speaks::Redis { master: false })),
            FAST_CHECKS,
        ],
        settled: &[
            ("redis_master", "redis1", "DOWN"),
            ("redis_master", "redis2", "UP"),
            ("redis_master", "redis3", "DOWN"),
        ],
        clients: &[("REDIS_PORT", 2), ("REDIS_PORT", 3), ("REDIS_PORT", 4)],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "pxc-clustercheck.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PXC_PORT", Env::Port),
            ("PXC_ONENODE_PORT", Env::Port),
            ("C1", Env::Server("c1")),
            ("C2", Env::Server("c2")),
            ("C3", Env::Server("c3")),
            ("C1_CHECK", Env::Check(Speaks::Http(&["/"]))),
            ("C2_CHECK", Env::Check(Speaks::Http(&["/"]))),
            ("C3_CHECK", Env::Check(Speaks::Http(&[]))),
            FAST_CHECKS,
        ],
        settled: &[
            ("pxc-back", "c1", "UP"),
            ("pxc-back", "c2", "UP"),
            ("pxc-back", "c3", "DOWN"),
            ("pxc-onenode-back", "c1", "UP"),
            ("pxc-onenode-back", "c3", "DOWN"),
        ],
        clients: &[
            ("PXC_PORT", 2),
            ("PXC_PORT", 3),
            ("PXC_PORT", 4),
            ("PXC_ONENODE_PORT", 2),
            ("PXC_ONENODE_PORT", 3),
            ("PXC_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "clustercontrol-mysqlchk.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("RW_PORT", Env::Port),
            ("G1", Env::Server("galera1")),
            ("G2", Env::Server("galera2")),
            ("G3", Env::Server("galera3")),
            (
                "G1_CHECK",
                Env::Check(Speaks::Banner(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nMySQL is running.\r\n",
                )),
            ),
            (
                "G2_CHECK",
                Env::Check(Speaks::Banner(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nMySQL is running.\r\n",
                )),
            ),
            (
                "G3_CHECK",
                Env::Check(Speaks::Banner(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nMySQL is *down*.\r\n",
                )),
            ),
            FAST_CHECKS,
        ],
        settled: &[
            ("haproxy_3307_rw", "galera1", "UP"),
            ("haproxy_3307_rw", "galera2", "UP"),
            ("haproxy_3307_rw", "galera3", "DOWN"),
        ],
        clients: &[
            ("RW_PORT", 2),
            ("RW_PORT", 3),
            ("RW_PORT", 4),
            ("RW_PORT", 5),
            ("RW_PORT", 6),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "yugabyte-ysql.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("YSQL_PORT", Env::Port),
            ("YB0", Env::Server("yb0")),
            ("YB1", Env::Server("yb1")),
            ("YB2", Env::Server("yb2")),
            FAST_CHECKS,
        ],
        settled: &[
            ("ysql", "yb-tserver-0", "UP"),
            ("ysql", "yb-tserver-1", "UP"),
            ("ysql", "yb-tserver-2", "UP"),
        ],
        clients: &[
            ("YSQL_PORT", 2),
            ("YSQL_PORT", 3),
            ("YSQL_PORT", 4),
            ("YSQL_PORT", 5),
            ("YSQL_PORT", 6),
            ("YSQL_PORT", 7),
            ("YSQL_PORT", 8),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "vitess-vtgate.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("VTGATE_PORT", Env::Port),
            ("VA", Env::Server("vtgate-a")),
            ("VB", Env::Server("vtgate-b")),
            ("VC", Env::Server("vtgate-c")),
            FAST_CHECKS,
        ],
        settled: &[
            ("vtgates", "vtgate-a", "UP"),
            ("vtgates", "vtgate-b", "UP"),
            ("vtgates", "vtgate-c", "UP"),
        ],
        clients: &[
            ("VTGATE_PORT", 2),
            ("VTGATE_PORT", 3),
            ("VTGATE_PORT", 4),
            ("VTGATE_PORT", 5),
            ("VTGATE_PORT", 6),
            ("VTGATE_PORT", 7),
            ("VTGATE_PORT", 8),
            ("VTGATE_PORT", 9),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "kubernetes-sidecar.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("LOCAL_PORT", Env::Port),
            ("PRIMARY_ADDR", Env::Server("pg-primary")),
            ("STANDBY_NAME", Env::Text("replica-b")),
            ("STANDBY_ADDR", Env::Server("replica-b")),
            FAST_CHECKS,
        ],
        settled: &[
            ("postgres", "pg-primary", "UP"),
            ("postgres", "replica-b", "UP"),
        ],
        clients: &[("LOCAL_PORT", 2), ("LOCAL_PORT", 3), ("LOCAL_PORT", 4)],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "mariadb-galera-first.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("WRITER_PORT", Env::Port),
            ("G1", Env::Server("galera1")),
            ("G2", Env::Server("galera2")),
            ("G3", Env::Server("galera3")),
            ("G1_CHECK", Env::Check(Speaks::Mysql)),
            ("G2_CHECK", Env::Check(Speaks::Mysql)),
            ("G3_CHECK", Env::Check(Speaks::Mysql)),
            FAST_CHECKS,
        ],
        settled: &[
            ("galera_writer", "galera1", "UP"),
            ("galera_writer", "galera2", "UP"),
            ("galera_writer", "galera3", "UP"),
        ],
        clients: &[
            ("WRITER_PORT", 2),
            ("WRITER_PORT", 3),
            ("WRITER_PORT", 4),
            ("WRITER_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "patroni-https-api.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("PRIMARY_PORT", Env::Port),
            ("REPLICA_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            ("PG2", Env::Server("pg2")),
            ("PG1_API", Env::Check(Speaks::Https(&["/primary"]))),
            ("PG2_API", Env::Check(Speaks::Https(&["/replica"]))),
            FAST_CHECKS,
        ],
        settled: &[
            ("primary", "postgresql_1", "UP"),
            ("primary", "postgresql_2", "DOWN"),
            ("replicas", "postgresql_1", "DOWN"),
            ("replicas", "postgresql_2", "UP"),
        ],
        clients: &[
            ("PRIMARY_PORT", 2),
            ("PRIMARY_PORT", 3),
            ("REPLICA_PORT", 4),
            ("REPLICA_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "pgsql-external-check.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("RW_PORT", Env::Port),
            ("PG1", Env::Server("pg1")),
            ("PG2", Env::Server("pg2")),
            ("PG3", Env::Server("pg3")),
            (
                "CHECK_SCRIPT",
                // Up unless the server names itself pg2 (a stand-in for a failing query).
                Env::Script(
                    "#!/bin/bash\nexec 3<>\"/dev/tcp/$3/$4\" || exit 1\n\
                     read -r -t 2 name <&3 || exit 1\n[ \"$name\" != pg2 ]\n",
                ),
            ),
            FAST_CHECKS,
        ],
        settled: &[
            ("pg_read_write", "pg1", "UP"),
            ("pg_read_write", "pg2", "DOWN"),
            ("pg_read_write", "pg3", "UP"),
        ],
        clients: &[
            ("RW_PORT", 2),
            ("RW_PORT", 3),
            ("RW_PORT", 4),
            ("RW_PORT", 5),
        ],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
    Case {
        file: "fly-dns-template.cfg",
        env: &[
            ("STATS_SOCKET", Env::Socket),
            ("DB_PORT", Env::Port),
            ("DNS", Env::Dns(&["db.internal"])),
            ("DB_NAME", Env::Text("db.internal")),
            ("DB_BACKEND_PORT", Env::PortOf("pg-app")),
            FAST_CHECKS,
        ],
        settled: &[
            ("db", "pg1", "UP"),
            ("db", "pg2", "MAINT (resolution)"),
            ("db", "pg3", "MAINT (resolution)"),
        ],
        clients: &[("DB_PORT", 2), ("DB_PORT", 3), ("DB_PORT", 4)],
        proxy_header: false,
        known_gap: None,
        stats_page: None,
    },
];
