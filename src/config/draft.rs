//! Section state while parsing: what the keyword parsers fill in before `build` turns it into
//! the typed model. A proxy starts as a copy of the `defaults` in force (HAProxy's
//! inheritance), and a server starts as a copy of its section's `default-server`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::model::{
    Balance, Bind, Diagnostic, HashType, HttpExpect, Loc, LogOptions, LogTarget, MaxLag, Mode,
    ProxyProtocol, Role, RoleCheck, RoleSource, Schema, TcpCheckRule, Verify,
};

/// The kind of a proxy section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `defaults [NAME]`.
    Defaults,
    /// `frontend NAME`.
    Frontend,
    /// `backend NAME`.
    Backend,
    /// `listen NAME`.
    Listen,
}

impl ProxyKind {
    /// The section keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            ProxyKind::Defaults => "defaults",
            ProxyKind::Frontend => "frontend",
            ProxyKind::Backend => "backend",
            ProxyKind::Listen => "listen",
        }
    }

    /// Has the frontend side (accepts clients).
    pub fn has_frontend(self) -> bool {
        matches!(self, ProxyKind::Frontend | ProxyKind::Listen)
    }

    /// Has the backend side (holds servers).
    pub fn has_backend(self) -> bool {
        matches!(self, ProxyKind::Backend | ProxyKind::Listen)
    }
}

/// Errors and warnings collected while reading the configuration.
#[derive(Debug, Default)]
pub struct Diags {
    /// Fatal findings.
    pub errors: Vec<Diagnostic>,
    /// `[WARNING]` findings.
    pub warnings: Vec<Diagnostic>,
}

impl Diags {
    /// Records an error at `loc`.
    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            loc: loc.clone(),
            message: message.into(),
        });
    }

    /// Records a warning at `loc`.
    pub fn warn(&mut self, loc: &Loc, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            loc: loc.clone(),
            message: message.into(),
        });
    }
}

/// The health-check `option` chosen for a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOption {
    /// `option tcp-check`.
    TcpCheck,
    /// `option pgsql-check user U`.
    Pgsql {
        /// User name.
        user: String,
    },
    /// `option mysql-check [user U [post-41]]`.
    Mysql {
        /// User name (`None`: the greeting alone is checked).
        user: Option<String>,
        /// `post-41`.
        post_41: bool,
    },
    /// `option httpchk [METHOD] [URI] [VERSION]`.
    Http {
        /// Method.
        method: String,
        /// URI.
        uri: String,
        /// Version.
        version: String,
        /// Headers hidden after the version (`HTTP/1.1\r\nHost:\ x`, deprecated).
        headers: Vec<(String, String)>,
        /// A body hidden after the headers (deprecated).
        body: String,
    },
    /// `option external-check`.
    External,
}

/// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]* [body TEXT]`: each part
/// given replaces that part of the request of `option httpchk`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSend {
    /// `meth`.
    pub method: Option<String>,
    /// `uri`.
    pub uri: Option<String>,
    /// `ver`.
    pub version: Option<String>,
    /// `hdr` lines, in order (when any, they replace the option's hidden headers).
    pub headers: Vec<(String, String)>,
    /// `body`.
    pub body: Option<String>,
}

/// `timeout ...` values of a proxy.
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    /// `timeout connect`.
    pub timeout_connect: Option<Duration>,
    /// `timeout client`.
    pub timeout_client: Option<Duration>,
    /// `timeout server`.
    pub timeout_server: Option<Duration>,
    /// `timeout queue`.
    pub timeout_queue: Option<Duration>,
    /// `timeout check`.
    pub timeout_check: Option<Duration>,
    /// `timeout tunnel`.
    pub timeout_tunnel: Option<Duration>,
    /// `timeout client-fin`.
    pub timeout_client_fin: Option<Duration>,
    /// `timeout server-fin`.
    pub timeout_server_fin: Option<Duration>,
}

/// `stats ...` lines of a proxy.
#[derive(Debug, Clone, Default)]
pub struct StatsDraft {
    /// `stats enable`, where.
    pub enable: Option<Loc>,
    /// `stats uri`.
    pub uri: Option<String>,
    /// `stats refresh`.
    pub refresh: Option<Duration>,
    /// `stats realm`.
    pub realm: Option<String>,
    /// `stats auth USER:PASS` lines: user, password, where.
    pub auth: Vec<(String, String, Loc)>,
    /// `stats http-request` rules, in order.
    pub http_request: Vec<crate::config::stats_access::Rule>,
    /// Where the first `stats http-request` is.
    pub http_request_loc: Option<Loc>,
    /// `stats admin if|unless` conditions, in order.
    pub admin: Vec<crate::config::stats_access::Cond>,
    /// `stats hide-version`.
    pub hide_version: bool,
    /// `stats show-legends`.
    pub show_legends: bool,
    /// `stats show-node [NAME]` (empty: the host's name).
    pub show_node: Option<String>,
}

/// A proxy section being read (also used for `defaults`).
#[derive(Debug, Clone)]
pub struct ProxyDraft {
    /// Section kind.
    pub kind: ProxyKind,
    /// Name (empty for an unnamed `defaults`).
    pub name: String,
    /// Section header location.
    pub loc: Loc,
    /// `id N`: the proxy's numeric id, with where it was given.
    pub id: Option<(u32, Loc)>,
    /// `mode`.
    pub mode: Mode,
    /// Where `mode` was last set (in this section or the defaults it came from).
    pub mode_loc: Option<Loc>,
    /// `bind` addresses.
    pub binds: Vec<Bind>,
    /// `default_backend`.
    pub default_backend: Option<(String, Loc)>,
    /// The first unconditional `use_backend`.
    pub use_backend: Option<(String, Loc)>,
    /// The conditional `use_backend NAME if|unless COND` lines before it, in order.
    pub use_backend_rules: Vec<crate::config::acl::UseBackend>,
    /// `acl NAME TEST` lines, for the conditions that follow them.
    pub acls: Vec<(String, crate::config::acl::Test)>,
    /// `tcp-request connection accept|reject` rules, in order.
    pub tcp_request_connection: Vec<crate::config::acl::TcpRule>,
    /// `tcp-request content accept|reject` rules, in order.
    pub tcp_request_content: Vec<crate::config::acl::TcpRule>,
    /// `tcp-request inspect-delay`.
    pub inspect_delay: Option<Duration>,
    /// `balance`.
    pub balance: Balance,
    /// `hash-type`.
    pub hash_type: HashType,
    /// `maxconn` (frontend side).
    pub maxconn: Option<u32>,
    /// `backlog` (frontend side; 0: unset).
    pub backlog: Option<u32>,
    /// `fullconn` (backend side; 0: unset, computed from the frontends).
    pub fullconn: Option<u32>,
    /// `option abortonclose`.
    pub abortonclose: bool,
    /// `rate-limit sessions` (frontend side; 0: unset).
    pub rate_limit_sessions: Option<u32>,
    /// `source` (backend side): what its servers without their own connect from.
    pub source: Option<crate::config::model::Source>,
    /// `timeout ...`.
    pub timeouts: Timeouts,
    /// `retries`.
    pub retries: u32,
    /// `option redispatch`.
    pub redispatch: bool,
    /// `option redispatch <interval>` (HAProxy's `redispatch_after`): -1 without a value,
    /// 0 after `no option redispatch`; with where the value was given.
    pub redispatch_after: (i32, Option<Loc>),
    /// `retry-on` includes `conn-failure` (the default), the only kind of retry a TCP proxy
    /// has.
    pub retry_on_conn_failure: bool,
    /// `option tcplog` (HAProxy's TCP format) or `log-format`, whichever came last, with
    /// where it was set.
    pub log_format: Option<(String, Loc)>,
    /// `option httplog`, where (falls back to tcplog in TCP mode, with a warning).
    pub httplog: Option<Loc>,
    /// The logging `option`s.
    pub log_options: LogOptions,
    /// `option allbackups`.
    pub allbackups: bool,
    /// `option clitcpka`.
    pub clitcpka: bool,
    /// `option srvtcpka`.
    pub srvtcpka: bool,
    /// `option nolinger`.
    pub nolinger: bool,
    /// `option log-health-checks`.
    pub log_health_checks: bool,
    /// `option independent-streams`.
    pub independent_streams: bool,
    /// `option tcp-smart-accept`.
    pub smart_accept: bool,
    /// `option tcp-smart-connect`.
    pub smart_connect: bool,
    /// `option splice-*`.
    pub splice: super::Splice,
    /// `disabled`.
    pub disabled: bool,
    /// HTTP-only settings seen (ignored in TCP mode with a warning), with where.
    pub http_only: Vec<(String, Loc)>,
    /// `log global`.
    pub log_global: bool,
    /// Own `log` targets.
    pub logs: Vec<LogTarget>,
    /// `log-tag`.
    pub log_tag: Option<String>,
    /// `option tcp-check|pgsql-check|mysql-check|httpchk`, where.
    pub check_option: Option<(CheckOption, Loc)>,
    /// `external-check command`, where.
    pub external_check_command: Option<(String, Loc)>,
    /// `external-check path`, where.
    pub external_check_path: Option<(String, Loc)>,
    /// `tcp-check` rules.
    pub tcp_check_rules: Vec<TcpCheckRule>,
    /// The `tcp-check` rules were written in this section (not inherited).
    pub tcp_check_own: bool,
    /// Where the first `tcp-check` rule is.
    pub tcp_check_loc: Option<Loc>,
    /// `http-check expect`.
    pub http_expect: Option<HttpExpect>,
    /// The `http-check expect` was written in this section (not inherited).
    pub http_expect_own: bool,
    /// Where the `http-check expect` is.
    pub http_expect_loc: Option<Loc>,
    /// `http-check send`.
    pub http_send: Option<HttpSend>,
    /// The `http-check send` was written in this section (not inherited).
    pub http_send_own: bool,
    /// `http-check disable-on-404`.
    pub disable_on_404: bool,
    /// `stats ...`.
    pub stats: StatsDraft,
    /// `role` (rolelb extension), where.
    pub role: Option<(Role, Loc)>,
    /// `role-check` (rolelb extension), where.
    pub role_check: Option<(RoleCheck, Loc)>,
    /// `max-lag` (rolelb extension), where.
    pub max_lag: Option<(MaxLag, Loc)>,
    /// `role-source` (rolelb extension), where; `None` = the default for the backend.
    pub role_source: Option<(RoleSource, Loc)>,
    /// `discover etcd ...` (rolelb extension), where.
    pub discover: Option<(DiscoverDraft, Loc)>,
    /// `stick-table`.
    pub stick_table: Option<crate::config::stick::StickTable>,
    /// `stick on|match|store-request` rules, in order.
    pub stick_rules: Vec<crate::config::stick::StickRule>,
    /// `default-server` options.
    pub default_server: ServerDraft,
    /// `server` lines.
    pub servers: Vec<ServerDraft>,
}

impl ProxyDraft {
    /// A proxy with HAProxy's built-in defaults.
    pub fn new(kind: ProxyKind, name: String, loc: Loc) -> Self {
        ProxyDraft {
            kind,
            name,
            default_server: ServerDraft::new(String::new(), loc.clone()),
            loc,
            id: None,
            mode: Mode::Tcp,
            mode_loc: None,
            binds: Vec::new(),
            default_backend: None,
            use_backend: None,
            use_backend_rules: Vec::new(),
            acls: Vec::new(),
            tcp_request_connection: Vec::new(),
            tcp_request_content: Vec::new(),
            inspect_delay: None,
            balance: Balance::default(),
            hash_type: HashType::default(),
            maxconn: None,
            backlog: None,
            source: None,
            timeouts: Timeouts::default(),
            retries: 3,
            redispatch: false,
            redispatch_after: (0, None),
            retry_on_conn_failure: true,
            log_format: None,
            httplog: None,
            log_options: LogOptions::default(),
            allbackups: false,
            fullconn: None,
            rate_limit_sessions: None,
            abortonclose: false,
            clitcpka: false,
            srvtcpka: false,
            nolinger: false,
            log_health_checks: false,
            independent_streams: false,
            smart_accept: false,
            smart_connect: false,
            splice: super::Splice::default(),
            disabled: false,
            http_only: Vec::new(),
            log_global: false,
            logs: Vec::new(),
            log_tag: None,
            check_option: None,
            external_check_command: None,
            external_check_path: None,
            tcp_check_rules: Vec::new(),
            tcp_check_own: false,
            tcp_check_loc: None,
            http_expect: None,
            http_expect_own: false,
            http_expect_loc: None,
            http_send: None,
            http_send_own: false,
            disable_on_404: false,
            stats: StatsDraft::default(),
            role: None,
            role_check: None,
            max_lag: None,
            role_source: None,
            discover: None,
            stick_table: None,
            stick_rules: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// A new proxy section inheriting everything `defaults` sets.
    pub fn inherit(defaults: &ProxyDraft, kind: ProxyKind, name: String, loc: Loc) -> Self {
        let mut draft = defaults.clone();
        draft.kind = kind;
        draft.name = name;
        draft.default_server.loc = loc.clone();
        draft.loc = loc;
        draft.tcp_check_own = false;
        draft.http_expect_own = false;
        draft.http_send_own = false;
        draft
    }
}

/// A `discover etcd NAME path PREFIX [schema S] [port N]` line; the etcd section it names
/// is looked up in `build`, since `etcd` sections may come later in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverDraft {
    /// The `etcd` section's name.
    pub etcd: String,
    /// `path`, without a trailing `/`.
    pub path: String,
    /// `schema`.
    pub schema: Schema,
    /// `port`.
    pub port: Option<u16>,
}

/// An `etcd NAME` section being read.
#[derive(Debug, Clone)]
pub struct EtcdDraft {
    /// Section name.
    pub name: String,
    /// Where the section starts.
    pub loc: Loc,
    /// `endpoints`, normalised to `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// `user`, where.
    pub user: Option<(String, Loc)>,
    /// `password`, where.
    pub password: Option<(String, Loc)>,
    /// `dial-timeout`.
    pub dial_timeout: Option<Duration>,
    /// `prefix`.
    pub prefix: Option<String>,
}

/// A `server` (or `default-server`) line being read.
#[derive(Debug, Clone)]
pub struct ServerDraft {
    /// Name (empty for `default-server`).
    pub name: String,
    /// Where it was declared.
    pub loc: Loc,
    /// Resolved traffic address (`None` when it could not be parsed; the error is recorded).
    pub addr: Option<SocketAddr>,
    /// `check`.
    pub check: bool,
    /// `inter`.
    pub inter: Duration,
    /// `fastinter`.
    pub fastinter: Option<Duration>,
    /// `downinter`.
    pub downinter: Option<Duration>,
    /// `rise`.
    pub rise: u32,
    /// `fall`.
    pub fall: u32,
    /// `port`.
    pub check_port: Option<u16>,
    /// `addr`.
    pub check_addr: Option<IpAddr>,
    /// `weight`.
    pub weight: u32,
    /// `backup`.
    pub backup: bool,
    /// `non-stick` (`stick` undoes it).
    pub non_stick: bool,
    /// `disabled`.
    pub disabled: bool,
    /// `maxconn`.
    pub maxconn: Option<u32>,
    /// `minconn`.
    pub minconn: Option<u32>,
    /// `maxqueue`.
    pub maxqueue: Option<u32>,
    /// `slowstart`.
    pub slowstart: Option<Duration>,
    /// `on-marked-down shutdown-sessions`.
    pub on_marked_down_shutdown_sessions: bool,
    /// `on-marked-up shutdown-backup-sessions`.
    pub on_marked_up_shutdown_backup_sessions: bool,
    /// `agent-check`.
    pub agent_check: bool,
    /// `agent-port`.
    pub agent_port: Option<u16>,
    /// `agent-addr`.
    pub agent_addr: Option<IpAddr>,
    /// `agent-inter`.
    pub agent_inter: Option<Duration>,
    /// `agent-send`.
    pub agent_send: Option<Vec<u8>>,
    /// `send-proxy` / `send-proxy-v2`.
    pub send_proxy: Option<ProxyProtocol>,
    /// `check-send-proxy`.
    pub check_send_proxy: bool,
    /// `source ADDR[:PORT]` on the server line.
    pub source: Option<crate::config::model::Source>,
    /// `id`.
    pub id: Option<u32>,
    /// `resolvers`, `resolve-prefer`, `init-addr`, `resolve-opts` and the host name.
    pub resolve: super::keywords::resolvers::ResolveDraft,
    /// `check-ssl`, `verify`, `ca-file`, `check-sni`, `verifyhost`, `crt`.
    pub tls: TlsDraft,
}

/// The TLS options of a server's health checks, as written (files not loaded yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsDraft {
    /// `check-ssl` (`no-check-ssl` clears it).
    pub check_ssl: bool,
    /// `verify` (`None`: the global `ssl-server-verify`).
    pub verify: Option<Verify>,
    /// `ca-file`, as written (`ca-base` not applied yet).
    pub ca_file: Option<String>,
    /// `check-sni`.
    pub check_sni: Option<String>,
    /// `verifyhost`.
    pub verifyhost: Option<String>,
    /// `crt`, as written (`crt-base` not applied yet).
    pub crt: Option<String>,
}

impl ServerDraft {
    /// A server with HAProxy's defaults: `inter 2s rise 2 fall 3 weight 1`.
    pub fn new(name: String, loc: Loc) -> Self {
        ServerDraft {
            name,
            loc,
            addr: None,
            check: false,
            inter: Duration::from_secs(2),
            fastinter: None,
            downinter: None,
            rise: 2,
            fall: 3,
            check_port: None,
            check_addr: None,
            weight: 1,
            backup: false,
            non_stick: false,
            disabled: false,
            maxconn: None,
            minconn: None,
            maxqueue: None,
            slowstart: None,
            on_marked_down_shutdown_sessions: false,
            on_marked_up_shutdown_backup_sessions: false,
            agent_check: false,
            agent_port: None,
            agent_addr: None,
            agent_inter: None,
            agent_send: None,
            send_proxy: None,
            check_send_proxy: false,
            source: None,
            id: None,
            resolve: Default::default(),
            tls: TlsDraft::default(),
        }
    }
}
