//! The typed configuration: what `config::load` produces from HAProxy-syntax text and what
//! `table` consumes. Inheritance (`defaults`, `default-server`) is already applied here, every
//! reference is resolved and every value validated, so the runtime never re-checks the text.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::log_format::LogFormat;
pub use super::model_dns::*;
pub use super::model_etcd::*;
pub use super::model_log::*;
pub use super::model_splice::*;
pub use super::model_tls::*;

/// Where a piece of configuration came from: `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Loc {
    /// The file as given on the command line.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", crate::text::escaped(&self.file), self.line)
    }
}

/// A whole, validated configuration (all `-f` files merged in order).
#[derive(Debug, Clone)]
pub struct Config {
    /// The `global` section.
    pub global: Global,
    /// Frontends, including the frontend half of every TCP `listen`, in file order.
    pub frontends: Vec<Frontend>,
    /// Backends, including the backend half of every TCP `listen`, in file order.
    pub backends: Vec<Backend>,
    /// `listen` sections with `mode http` + `stats enable`: the stats page and `/metrics`.
    pub stats: Vec<StatsListener>,
    /// `etcd NAME` sections (rolelb extension): the etcd clusters `discover` lines watch.
    pub etcd: Vec<EtcdCluster>,
    /// `resolvers NAME` sections.
    pub resolvers: Vec<Resolvers>,
    /// Non-fatal findings (HAProxy prints these as `[WARNING]`), e.g. missing timeouts.
    pub warnings: Vec<Diagnostic>,
}

/// One finding about the configuration, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it was found.
    pub loc: Loc,
    /// What is wrong and, where possible, what to do about it.
    pub message: String,
}

/// One line, `FILE:LINE: message`, whatever the message quotes: control characters are
/// escaped and overlong tokens shortened (see [`crate::text`]).
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, crate::text::message(&self.message))
    }
}

/// The `global` section.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `maxconn`: process-wide limit on concurrent client connections.
    pub maxconn: Option<u32>,
    /// `nbthread`: worker threads of the runtime.
    pub nbthread: Option<usize>,
    /// `stats socket PATH [mode M] [level L]`.
    pub stats_sockets: Vec<StatsSocket>,
    /// `hard-stop-after`: how long a stopping process waits for sessions to end.
    pub hard_stop_after: Option<Duration>,
    /// `grace`: how long listeners keep accepting after a soft stop begins (`/healthz` is
    /// 503 meanwhile), so a VRRP check moves the address away before connections are refused.
    pub grace: Option<Duration>,
    /// `log` targets.
    pub logs: Vec<LogTarget>,
    /// `log-tag`: the tag in the header of every log line (`rolelb` when not set).
    pub log_tag: Option<String>,
    /// `spread-checks N` (0..=50): each health and agent check interval is moved by a random
    /// amount of up to N% either way (0: checks keep their exact interval).
    pub spread_checks: u32,
    /// `max-spread-checks`: the first checks after a start are spread over at most this long.
    pub max_spread_checks: Option<Duration>,
    /// `node NAME`: this instance's name in `show info` and the stats page (default: the
    /// host's name).
    pub node: Option<String>,
    /// `description TEXT...`: shown by `show info`.
    pub description: Option<String>,
    /// `stats timeout`: a stats socket session idle this long is closed (default 10 s).
    pub stats_timeout: Option<Duration>,
    /// `stats maxconn`: sessions served at once over all stats sockets (default 10); more
    /// wait in the kernel's backlog.
    pub stats_maxconn: Option<u32>,
    /// `log-send-hostname [NAME]`: the host name in the header of syslog lines (NAME, or
    /// this machine's name).
    pub log_send_hostname: Option<String>,
    /// `user NAME` or `uid N`: drop privileges to this user after binding.
    pub user: Option<Account>,
    /// `group NAME` or `gid N`: drop privileges to this group after binding.
    pub group: Option<Account>,
    /// `pidfile`.
    pub pidfile: Option<PathBuf>,
    /// `daemon` was given (rolelb warns and stays in the foreground).
    pub daemon: bool,
    /// `admin bind ADDR:PORT [token-file PATH]`: the HTTP admin API.
    pub admin: Option<AdminBind>,
    /// `ulimit-n`: the file descriptor limit to set (`None`: computed from `maxconn`).
    pub ulimit_n: Option<u64>,
    /// `tune.bufsize`: bytes held per direction of a session (`None`: [`DEFAULT_BUFSIZE`]).
    pub tune_bufsize: Option<usize>,
    /// `tune.maxaccept` (`None`: [`DEFAULT_MAXACCEPT`]).
    pub tune_maxaccept: Option<MaxAccept>,
    /// `tune.sndbuf.client` / `tune.rcvbuf.client`: set on each accepted connection.
    pub client_buffers: BufferSizes,
    /// `tune.sndbuf.server` / `tune.rcvbuf.server`: set on each server connection before it
    /// connects (checks too).
    pub server_buffers: BufferSizes,
    /// `maxconnrate N`: connections accepted per second, all frontends together; past it the
    /// listeners stop accepting until the rate falls.
    pub maxconnrate: Option<u32>,
    /// `maxsessrate N`: sessions per second, all frontends together (as `maxconnrate`).
    pub maxsessrate: Option<u32>,
    /// `nosplice`: no kernel splicing whatever the proxies' `option splice-*`.
    pub nosplice: bool,
    /// `maxpipes` (`None`: `maxconn / 4`, unlimited without `maxconn`).
    pub maxpipes: Option<usize>,
    /// `tune.pipesize`: bytes asked of the kernel for each new pipe (`None`: its default).
    pub tune_pipesize: Option<usize>,
    /// `external-check`: proxies may run `option external-check`.
    pub external_check: bool,
    /// `insecure-fork-wanted`: the process may start programs (external checks need it).
    pub insecure_fork_wanted: bool,
    /// `ssl-server-verify`: the `verify` of servers that set none (default `required`).
    pub ssl_server_verify: Verify,
    /// `ca-base`: where a relative `ca-file` is looked up.
    pub ca_base: Option<PathBuf>,
    /// `crt-base`: where a relative server `crt` is looked up.
    pub crt_base: Option<PathBuf>,
}

/// A user or group of `global`, by name (`user`, `group`) or by number (`uid`, `gid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// Looked up in the system's user or group database when rolelb starts.
    Name(String),
    /// Taken as is, as HAProxy takes `uid` and `gid` (it need not be in the database).
    Id(u32),
}

/// Socket buffer sizes asked of the kernel for one side's connections (`SO_SNDBUF`,
/// `SO_RCVBUF`); 0 leaves the kernel's default, which it autotunes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferSizes {
    /// `tune.sndbuf.*`.
    pub snd: u32,
    /// `tune.rcvbuf.*`.
    pub rcv: u32,
}

/// HAProxy's default `tune.bufsize`.
pub const DEFAULT_BUFSIZE: usize = 16 * 1024;
/// HAProxy 2.6's default `tune.maxaccept` (`MAX_ACCEPT`).
pub const DEFAULT_MAXACCEPT: MaxAccept = MaxAccept::Batch(std::num::NonZeroU32::new(4).unwrap());

/// `tune.maxaccept`: how many connections one listener accepts in a row before other work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxAccept {
    /// At most this many, then the listener lets other tasks run.
    Batch(std::num::NonZeroU32),
    /// `-1`: no limit of rolelb's own (the runtime's fairness still applies).
    Unlimited,
}

impl Global {
    /// The effective `tune.bufsize`.
    pub fn bufsize(&self) -> usize {
        self.tune_bufsize.unwrap_or(DEFAULT_BUFSIZE)
    }

    /// The effective `tune.maxaccept`.
    pub fn maxaccept(&self) -> MaxAccept {
        self.tune_maxaccept.unwrap_or(DEFAULT_MAXACCEPT)
    }

    /// `node`, else this machine's host name (HAProxy's default).
    pub fn node_name(&self) -> &str {
        self.node
            .as_deref()
            .unwrap_or_else(|| crate::logging::hostname())
    }

    /// The effective `stats timeout` (HAProxy's default: 10 s).
    pub fn stats_timeout(&self) -> Duration {
        self.stats_timeout.unwrap_or(Duration::from_secs(10))
    }

    /// The effective `stats maxconn` (HAProxy's default: 10).
    pub fn stats_maxconn(&self) -> usize {
        self.stats_maxconn
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(10)
    }
}

/// `admin bind ADDR:PORT [token-file PATH]` in `global` (a rolelb extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminBind {
    /// Where the admin API listens (loopback when the address gives only a port).
    pub addr: SocketAddr,
    /// The file holding the bearer token that mutating calls must present.
    pub token_file: Option<PathBuf>,
    /// Where it was declared.
    pub loc: Loc,
}

/// `stats socket` in `global`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    /// Unix socket path.
    pub path: PathBuf,
    /// `mode` (octal permission bits).
    pub mode: Option<u32>,
    /// `level`.
    pub level: StatsLevel,
    /// Where it was declared.
    pub loc: Loc,
}

/// `level` of a stats socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatsLevel {
    /// `level user`: read-only commands.
    User,
    /// `level operator` (HAProxy's default).
    #[default]
    Operator,
    /// `level admin`: state-changing commands too.
    Admin,
}

/// Proxy `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `mode tcp`.
    #[default]
    Tcp,
    /// `mode http` (only accepted for a stats listener).
    Http,
}

/// A frontend: where clients connect and which backend serves them.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// Proxy name.
    pub name: String,
    /// The proxy's id (`id N`, else HAProxy's automatic numbering; a `listen`'s two halves
    /// share it).
    pub id: u32,
    /// Where the section starts.
    pub loc: Loc,
    /// Addresses to listen on.
    pub binds: Vec<Bind>,
    /// The backend that serves this frontend: the first unconditional `use_backend`, else
    /// `default_backend` (for a `listen`, itself). Resolved: it exists in `Config::backends`.
    pub backend: String,
    /// Conditional `use_backend NAME if|unless COND` lines before the unconditional one: the
    /// first whose condition holds names the backend instead of `backend`. Resolved.
    pub use_backend_rules: Vec<super::acl::UseBackend>,
    /// `tcp-request connection accept|reject` rules (run before an `accept-proxy` header).
    pub tcp_request_connection: Vec<super::acl::TcpRule>,
    /// `tcp-request content accept|reject` rules (run after it).
    pub tcp_request_content: Vec<super::acl::TcpRule>,
    /// `tcp-request inspect-delay`: how long content rules may wait for data; rolelb's
    /// fetches never wait, as in HAProxy with the same fetches.
    pub inspect_delay: Option<Duration>,
    /// `maxconn`: concurrent client connections accepted by this frontend.
    pub maxconn: Option<u32>,
    /// `backlog`: the listen backlog of its addresses whose `bind` line sets none.
    pub backlog: Option<u32>,
    /// `rate-limit sessions N`: new sessions per second; past it the frontend stops
    /// accepting until the rate falls (clients wait in the backlog).
    pub rate_limit_sessions: Option<u32>,
    /// `timeout client`.
    pub timeout_client: Option<Duration>,
    /// `timeout client-fin`.
    pub timeout_client_fin: Option<Duration>,
    /// A log line per session: `option tcplog` or `log-format` is set.
    pub tcplog: bool,
    /// The format of that line (`option tcplog` is HAProxy's TCP format).
    pub log_format: Option<Arc<LogFormat>>,
    /// The logging `option`s.
    pub log_options: LogOptions,
    /// `option clitcpka`.
    pub clitcpka: bool,
    /// `option nolinger`: the client's connection is closed with a reset (`SO_LINGER` 0).
    pub nolinger: bool,
    /// `option independent-streams`: the client side's read timeout is refreshed by reads
    /// only, not also by writes to the client.
    pub independent_streams: bool,
    /// `option tcp-smart-accept`: the listening sockets are in delayed-ACK mode
    /// (`TCP_QUICKACK` 0), so a client's first data is acknowledged with the answer.
    pub smart_accept: bool,
    /// `option splice-*`.
    pub splice: Splice,
    /// `log global` (or an own `log` target list when not empty).
    pub log_global: bool,
    /// Own `log` targets of this proxy.
    pub logs: Vec<LogTarget>,
    /// `log-tag` of this proxy or its `defaults`: the tag of its session lines (`None`: the
    /// global one).
    pub log_tag: Option<String>,
    /// `disabled`: the proxy is declared but does not listen.
    pub disabled: bool,
}

/// One address of a `bind` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// `name N`.
    pub name: Option<String>,
    /// `accept-proxy`: connections start with a PROXY protocol header.
    pub accept_proxy: bool,
    /// `defer-accept`: a connection is accepted once the client has sent data, or about a
    /// second after its handshake (`TCP_DEFER_ACCEPT` 1 s, as HAProxy sets it).
    pub defer_accept: bool,
    /// `tfo`: TCP Fast Open is accepted on this address (`TCP_FASTOPEN`).
    pub tfo: bool,
    /// `id N`: the listener's id (HAProxy shows it as the `sid` of its stats row).
    pub id: Option<u32>,
    /// `maxconn N` (N > 0): connections open at once on this address; more wait in the
    /// backlog, as in HAProxy.
    pub maxconn: Option<u32>,
    /// The socket options of the line.
    pub socket: BindSocket,
    /// Where it was declared.
    pub loc: Loc,
}

/// `source ADDR[:PORT] [interface NAME]`: where connections to a server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The local address (port 0: any free port).
    pub addr: SocketAddr,
    /// `interface NAME`: leave through this interface (`SO_BINDTODEVICE`).
    pub interface: Option<String>,
}

/// How the listening sockets of a `bind` line are set up, as HAProxy 2.6 sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindSocket {
    /// `transparent`: the address may be one this host does not have (yet), such as a
    /// keepalived VIP held by another node (`IP_TRANSPARENT` / `IPV6_TRANSPARENT`).
    pub transparent: bool,
    /// `v6only` (`Some(true)`) or `v4v6` (`Some(false)`) on an IPv6 address; `None`: the
    /// system's default (`net.ipv6.bindv6only`).
    pub v6only: Option<bool>,
    /// `interface NAME`: only connections arriving on this interface (`SO_BINDTODEVICE`).
    pub interface: Option<String>,
    /// `backlog N` (0 or absent: the default, see `Frontend::backlog`).
    pub backlog: Option<u32>,
    /// `mss N`: positive, the MSS advertised to clients (`TCP_MAXSEG` on the listener);
    /// negative, by how much each accepted connection's MSS is lowered.
    pub mss: Option<i32>,
    /// `tcp-ut DELAY`: `TCP_USER_TIMEOUT` of the client connections.
    pub tcp_ut: Option<Duration>,
}

impl BindSocket {
    /// The options that must be set before the address is bound: a socket bound without
    /// them cannot take them later.
    pub fn before_bind(&self) -> (bool, Option<bool>, Option<&str>) {
        (self.transparent, self.v6only, self.interface.as_deref())
    }
}

/// `balance` algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// `roundrobin`: weighted, smooth.
    #[default]
    RoundRobin,
    /// `static-rr`: weighted, fixed map.
    StaticRr,
    /// `leastconn`.
    LeastConn,
    /// `first`.
    First,
    /// `source`: hash of the client address.
    Source,
}

/// `hash-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashType {
    /// `map-based` (HAProxy's default).
    #[default]
    MapBased,
    /// `consistent`.
    Consistent,
}

/// A backend: a set of servers and how to pick among them.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Proxy name.
    pub name: String,
    /// The proxy's id (`id N`, else HAProxy's automatic numbering; a `listen`'s two halves
    /// share it).
    pub id: u32,
    /// Where the section starts.
    pub loc: Loc,
    /// `balance`.
    pub balance: Balance,
    /// `hash-type`.
    pub hash_type: HashType,
    /// `timeout connect`.
    pub timeout_connect: Option<Duration>,
    /// `timeout server`.
    pub timeout_server: Option<Duration>,
    /// `timeout server-fin`.
    pub timeout_server_fin: Option<Duration>,
    /// `timeout queue` (HAProxy: defaults to `timeout connect`).
    pub timeout_queue: Option<Duration>,
    /// `timeout tunnel`: replaces client/server timeouts once both sides are connected.
    pub timeout_tunnel: Option<Duration>,
    /// `timeout check`: for a check, after the connection is established (default: `inter`).
    pub timeout_check: Option<Duration>,
    /// `retries` (default 3).
    pub retries: u32,
    /// `option redispatch`: a failed connection may be retried on another server.
    pub redispatch: bool,
    /// `option redispatch <interval>`: redispatch on every Nth retry (N > 0), on the retry
    /// -N before the last one (N < 0; -1, the default, is the last retry).
    pub redispatch_after: i32,
    /// `retry-on` includes `conn-failure` (the default): failed connects are retried.
    pub retry_on_conn_failure: bool,
    /// `option allbackups`.
    pub allbackups: bool,
    /// `option abortonclose`: a client that closes while its session waits for a server
    /// (queue, connect) is dropped even when it sent data.
    pub abortonclose: bool,
    /// `fullconn N`: the backend's load at which its servers' `minconn` limits reach
    /// `maxconn` (`None`: a tenth of the `maxconn` of the frontends that may use it).
    pub fullconn: Option<u32>,
    /// `option srvtcpka`.
    pub srvtcpka: bool,
    /// `option nolinger`: the server's connection is closed with a reset (`SO_LINGER` 0),
    /// and a client's FIN closes it rather than being passed on.
    pub nolinger: bool,
    /// `option independent-streams`: the server side's read timeout is refreshed by reads
    /// only, not also by writes to the server.
    pub independent_streams: bool,
    /// `option tcp-smart-connect`: a server connection that has bytes to send as soon as it
    /// is established (a `send-proxy` header) is opened in delayed-ACK mode, so the
    /// handshake's last ACK leaves with those bytes.
    pub smart_connect: bool,
    /// `option log-health-checks`: every health check result that changes the check's
    /// status or moves the server's health counter is logged, not only UP/DOWN.
    pub log_health_checks: bool,
    /// `option splice-*`.
    pub splice: Splice,
    /// Health check method for servers with `check`.
    pub check: CheckMethod,
    /// Servers in declaration order, shared (not copied) by the tables built from this
    /// configuration and by the next effective configuration when they do not change.
    pub servers: Vec<Arc<Server>>,
    /// `disabled`.
    pub disabled: bool,
    /// `role primary|replica|any` (rolelb extension): the role a server must have to take
    /// traffic here.
    pub role: Role,
    /// `role-check ...` (rolelb extension): how each server's role is found out.
    pub role_check: Option<RoleCheck>,
    /// `max-lag SIZE|DURATION` (rolelb extension, with `role replica`).
    pub max_lag: Option<MaxLag>,
    /// `role-source check|etcd|both` (rolelb extension): who decides the primary.
    pub role_source: RoleSource,
    /// `discover etcd ...` (rolelb extension): servers also come from etcd.
    pub discover: Option<Discover>,
    /// `stick-table` with its `stick` rules.
    pub stick: Option<Arc<crate::config::stick::Stick>>,
    /// The `default-server` options in force for this backend, as a server without name or
    /// address: the template discovered servers are built from.
    pub default_server: Server,
}

/// `role` of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// `role any` (the default): roles are not looked at.
    #[default]
    Any,
    /// `role primary`: only the one primary takes traffic (single-writer guard).
    Primary,
    /// `role replica`: only replicas take traffic (within `max-lag`).
    Replica,
}

impl Role {
    /// The word after `role` in the configuration.
    pub fn keyword(self) -> &'static str {
        match self {
            Role::Any => "any",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// `role-check ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleCheck {
    /// `role-check pgsql user U [password P] [database D]`.
    Pgsql {
        /// User.
        user: String,
        /// Password, if any.
        password: Option<String>,
        /// Database (default: the user name, as libpq does).
        database: Option<String>,
    },
    /// `role-check mysql user U [password P]`.
    Mysql {
        /// User.
        user: String,
        /// Password, if any.
        password: Option<String>,
    },
    /// `role-check agent`: the `#role=` and `lag=` words of the agent-check reply.
    Agent,
}

/// `max-lag`: how far behind a replica may be and still take reads: a size (`16m`, bytes of
/// WAL, PostgreSQL) or a duration (`10s`). The same limit as rolelb-agent's `max_lag`.
pub use rolelb_roles::LagLimit as MaxLag;

/// `role-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleSource {
    /// The role checks decide (default without `discover`).
    #[default]
    Check,
    /// etcd's leader decides.
    Etcd,
    /// Both must agree (default with `discover`).
    Both,
}

/// How a server with `check` is checked (the proxy's `option ...-check` / `tcp-check` rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckMethod {
    /// Plain TCP connect.
    #[default]
    Tcp,
    /// `option tcp-check` with its `tcp-check` rules in order.
    TcpCheck(Vec<TcpCheckRule>),
    /// `option pgsql-check user U`.
    Pgsql {
        /// User name sent in the startup message.
        user: String,
    },
    /// `option mysql-check [user U [post-41]]`.
    Mysql {
        /// User name sent in the handshake response; `None`: only the server's greeting is
        /// read (HAProxy's check without `user`).
        user: Option<String>,
        /// `post-41`: use the 4.1+ client protocol.
        post_41: bool,
    },
    /// `option httpchk [METHOD] [URI] [VERSION]` with `http-check expect`.
    Http(HttpCheck),
    /// `option external-check` with `external-check command` and `external-check path`.
    External(ExternalCheck),
}

/// `option external-check`: the program run for each check (see `check::external`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCheck {
    /// `external-check command`: run as is (with a `/`) or looked up in `path`.
    pub command: String,
    /// `external-check path`: the program's `PATH` (HAProxy's default is empty).
    pub path: String,
}

/// One `tcp-check` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpCheckRule {
    /// `tcp-check connect [port N]`.
    Connect {
        /// Port override.
        port: Option<u16>,
    },
    /// `tcp-check send STRING` (escapes already decoded).
    Send(Vec<u8>),
    /// `tcp-check expect [!] string STRING`.
    ExpectString {
        /// The bytes to find in the response.
        pattern: Vec<u8>,
        /// `!`: the check fails when the pattern is found.
        negate: bool,
    },
    /// `tcp-check expect [!] rstring REGEX`.
    ExpectRegex {
        /// The regular expression source (validated at parse time).
        pattern: String,
        /// `!`: the check fails when the regex matches.
        negate: bool,
    },
}

/// `option httpchk` and `http-check expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request method (default `OPTIONS`).
    pub method: String,
    /// Request URI (default `/`).
    pub uri: String,
    /// HTTP version string (default `HTTP/1.0`).
    pub version: String,
    /// Request headers in order: `http-check send hdr NAME VALUE`, or the deprecated ones
    /// hidden in the version string of `option httpchk`.
    pub headers: Vec<(String, String)>,
    /// `http-check send body TEXT` (empty: no body).
    pub body: String,
    /// `http-check expect`: what a healthy answer looks like (default: any 2xx or 3xx status).
    pub expect: HttpExpect,
    /// `http-check disable-on-404`: a 404 from a running server stops new traffic to it.
    pub disable_on_404: bool,
}

/// `http-check expect ...`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HttpExpect {
    /// No `expect`: HAProxy accepts 2xx and 3xx.
    #[default]
    Status2xx3xx,
    /// `expect [!] status CODE[,CODE...]` (ranges like `200-299` allowed).
    Status {
        /// Accepted status ranges, inclusive.
        codes: Vec<(u16, u16)>,
        /// `!`.
        negate: bool,
    },
    /// `expect [!] rstatus REGEX`: the three-digit status code matches REGEX.
    StatusRegex {
        /// The regular expression source (validated at parse time).
        pattern: String,
        /// `!`.
        negate: bool,
    },
    /// `expect [!] string TEXT`: the body contains TEXT.
    String {
        /// The text.
        text: String,
        /// `!`.
        negate: bool,
    },
    /// `expect [!] rstring REGEX`: the body matches REGEX.
    StringRegex {
        /// The regular expression source (validated at parse time).
        pattern: String,
        /// `!`.
        negate: bool,
    },
}

impl HttpExpect {
    /// Whether the rule reads the response body.
    pub fn needs_body(&self) -> bool {
        matches!(
            self,
            HttpExpect::String { .. } | HttpExpect::StringRegex { .. }
        )
    }
}

/// PROXY protocol header sent to a server (`send-proxy` / `send-proxy-v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// `send-proxy`: text v1.
    V1,
    /// `send-proxy-v2`: binary v2.
    V2,
}

/// A `server` line with `default-server` options applied.
#[derive(Debug, Clone)]
pub struct Server {
    /// Server name, unique within its backend.
    pub name: Arc<str>,
    /// Where it was declared.
    pub loc: Loc,
    /// Traffic address (resolved once at load, as HAProxy does at startup).
    pub addr: SocketAddr,
    /// `check`: run health checks.
    pub check: bool,
    /// `inter` (default 2s).
    pub inter: Duration,
    /// `fastinter`: interval while the state is changing (default: `inter`).
    pub fastinter: Option<Duration>,
    /// `downinter`: interval while DOWN (default: `inter`).
    pub downinter: Option<Duration>,
    /// `rise` (default 2).
    pub rise: u32,
    /// `fall` (default 3).
    pub fall: u32,
    /// `port`: check port.
    pub check_port: Option<u16>,
    /// `addr`: check address.
    pub check_addr: Option<IpAddr>,
    /// `weight` 0..=256 (default 1).
    pub weight: u32,
    /// `backup`.
    pub backup: bool,
    /// `non-stick`: connections to this server are never stored in a stick table.
    pub non_stick: bool,
    /// `disabled`: starts in maintenance.
    pub disabled: bool,
    /// `maxconn`: concurrent sessions on this server (`None` or 0: unlimited). A `minconn`
    /// above it (or without it) raises it to `minconn`, as in HAProxy.
    pub maxconn: Option<u32>,
    /// `minconn`, when below `maxconn`: the limit is dynamic, from `minconn` with an idle
    /// backend up to `maxconn` when the backend has `fullconn` sessions (HAProxy's
    /// `srv_dynamic_maxconn`). `None`: the limit is `maxconn` alone.
    pub minconn: Option<u32>,
    /// `maxqueue`: connections allowed to wait for this server (`None` or 0: unlimited).
    pub maxqueue: Option<u32>,
    /// `slowstart`: ramp the weight up over this long after coming back.
    pub slowstart: Option<Duration>,
    /// `on-marked-down shutdown-sessions`.
    pub on_marked_down_shutdown_sessions: bool,
    /// `on-marked-up shutdown-backup-sessions`.
    pub on_marked_up_shutdown_backup_sessions: bool,
    /// `agent-check` and its options (boxed: most servers have none, and discovered
    /// backends hold thousands of servers).
    pub agent: Option<Box<AgentCheck>>,
    /// `send-proxy` / `send-proxy-v2`.
    pub send_proxy: Option<ProxyProtocol>,
    /// `source` (the server's, else its backend's): the address its connections, traffic and
    /// checks alike, are made from.
    pub source: Option<Source>,
    /// The PROXY header its health checks send first, as HAProxy 2.6 decides it: with
    /// `check-send-proxy`, or with `send-proxy[-v2]` when the check goes to the traffic
    /// address and port (no check `addr`/`port`); v2 when the server sends v2, else v1.
    pub check_proxy_header: Option<ProxyProtocol>,
    /// What etcd says about it, when it was discovered (`discover`).
    pub etcd: Option<EtcdView>,
    /// `id`: its id in the backend as written (see [`server_ids`] for every server's).
    pub id: Option<u32>,
    /// `resolvers` with a host name: the name is resolved at run time (`dns`).
    pub resolve: Option<Arc<Resolve>>,
    /// No address to use (`init-addr none`, a name that stopped resolving past its `hold`,
    /// an unused `server-template` slot): in maintenance, HAProxy's MAINT (resolution).
    pub dns_maint: bool,
    /// `check-ssl` and its settings: the health checks speak TLS.
    pub check_tls: Option<Arc<CheckTls>>,
}

/// Every server's id in its backend (HAProxy's `puid`), in declaration order: a server with
/// `id N` has N; the others, in order, take the first id not used by an `id` line counting
/// from a running number that every server, with an `id` or not, advances by one (HAProxy's
/// `check_config_validity`). So `a`, `b id 1`, `c` number 2, 1, 4.
pub fn server_ids<'a>(servers: impl IntoIterator<Item = &'a Server>) -> Vec<u32> {
    let servers: Vec<&Server> = servers.into_iter().collect();
    let mut used: std::collections::BTreeSet<u32> = servers.iter().filter_map(|s| s.id).collect();
    let mut next: u32 = 1;
    servers
        .iter()
        .map(|s| {
            let id = s.id.unwrap_or_else(|| {
                while used.contains(&next) {
                    next = next.saturating_add(1);
                }
                used.insert(next);
                next
            });
            next = next.saturating_add(1);
            id
        })
        .collect()
}

impl Server {
    /// Where its health and role checks go: `addr` and `port` (`check_addr`, `check_port`),
    /// each defaulting to the traffic address's.
    pub fn check_target(&self) -> SocketAddr {
        SocketAddr::new(
            self.check_addr.unwrap_or(self.addr.ip()),
            self.check_port.unwrap_or(self.addr.port()),
        )
    }
}

/// `agent-check` with `agent-port`, `agent-addr`, `agent-inter`, `agent-send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCheck {
    /// `agent-port` (required by HAProxy).
    pub agent_port: u16,
    /// `agent-addr` (default: the server's address).
    pub agent_addr: Option<IpAddr>,
    /// `agent-inter` (default: the server's `inter`).
    pub agent_inter: Duration,
    /// `agent-send` (escapes decoded).
    pub agent_send: Option<Vec<u8>>,
}

/// A `listen` or `frontend` with `mode http` and `stats enable`: serves the stats page and `/metrics`.
#[derive(Debug, Clone)]
pub struct StatsListener {
    /// Proxy name.
    pub name: String,
    /// Where the section starts.
    pub loc: Loc,
    /// Addresses to listen on.
    pub binds: Vec<Bind>,
    /// `stats uri` (default `/`).
    pub uri: String,
    /// `stats refresh`, if given.
    pub refresh: Option<Duration>,
    /// Who may see the page: the first rule whose condition matches decides; none matching
    /// (or none at all) lets the request through. `stats auth` is one `auth` rule.
    pub rules: Vec<super::stats_access::Rule>,
    /// `stats admin if|unless`: the page's server actions are allowed when one matches.
    pub admin: Vec<super::stats_access::Cond>,
    /// The userlists the rules and conditions name (`stats auth` fills
    /// [`super::stats_access::STATS_AUTH_USERLIST`]).
    pub userlists: Vec<Arc<super::stats_access::Userlist>>,
    /// `stats hide-version`.
    pub hide_version: bool,
    /// `stats show-legends`.
    pub show_legends: bool,
    /// `stats show-node [NAME]` (empty: the host's name).
    pub show_node: Option<String>,
}
