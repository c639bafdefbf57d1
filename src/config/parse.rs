//! The section reader: walks lexed lines, opens sections (`global`, `defaults`, `frontend`,
//! `backend`, `listen`), applies `defaults` inheritance when a proxy opens, and dispatches
//! each line to its keyword table. Errors never stop it: every line is looked at.

use std::collections::HashMap;

use super::draft::{Diags, EtcdDraft, ProxyDraft, ProxyKind};
use super::keywords::{
    self, Ctx, did_you_mean, etcd, global, proxy, resolvers, unsupported, userlist,
};
use super::lexer::Line;
use super::model::{Global, Loc, Resolvers};
use super::stats_access::Userlist;

/// What the reader has collected so far.
pub struct Reader {
    /// Errors and warnings.
    pub diags: Diags,
    /// The `global` settings.
    pub global: Global,
    /// Frontend, backend and listen sections in file order.
    pub proxies: Vec<ProxyDraft>,
    /// `etcd` sections in file order.
    pub etcd: Vec<EtcdDraft>,
    /// `resolvers` sections in file order.
    pub resolvers: Vec<Resolvers>,
    /// `userlist` sections in file order (a duplicate name is ignored, as HAProxy).
    pub userlists: Vec<Userlist>,
    /// How many proxies came before the first global `stats` line: there HAProxy creates its
    /// internal `GLOBAL` proxy (the stats socket's), which shifts the automatic proxy ids.
    pub cli_proxy_at: Option<usize>,
    /// The `defaults` in force for the next proxy.
    defaults: ProxyDraft,
    /// Named `defaults` sections, for `from NAME`.
    named_defaults: HashMap<String, ProxyDraft>,
    section: Section,
}

enum Section {
    /// Before any section header (in each file).
    None,
    Global,
    Proxy(Box<ProxyDraft>),
    Etcd(EtcdDraft),
    Resolvers(Resolvers),
    Userlist(Userlist),
    /// An unsupported section whose lines are skipped (its header was reported).
    Skip,
}

const SECTIONS: [&str; 8] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "etcd",
    "userlist",
    "resolvers",
];

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with HAProxy's built-in defaults.
    pub fn new() -> Self {
        let builtin = Loc {
            file: "<builtin>".into(),
            line: 0,
        };
        Reader {
            diags: Diags::default(),
            global: Global::default(),
            proxies: Vec::new(),
            etcd: Vec::new(),
            resolvers: Vec::new(),
            userlists: Vec::new(),
            cli_proxy_at: None,
            defaults: ProxyDraft::new(ProxyKind::Defaults, String::new(), builtin),
            named_defaults: HashMap::new(),
            section: Section::None,
        }
    }

    /// Reads the lines of one file; a section ends at the end of its file.
    pub fn read_file(&mut self, lines: &[Line]) {
        for line in lines {
            self.read_line(line);
        }
        self.close_section();
    }

    fn read_line(&mut self, line: &Line) {
        let keyword = line.words[0].as_str();
        if SECTIONS.contains(&keyword) {
            self.close_section();
            self.open_section(line);
            return;
        }
        if let Some(refused) = unsupported::find(unsupported::SECTION_REFUSED, keyword) {
            self.close_section();
            self.diags
                .error(&line.loc, format!("'{keyword}' {}", refused.why));
            self.section = Section::Skip;
            return;
        }
        let mut ctx = Ctx {
            keyword,
            args: &line.words[1..],
            loc: &line.loc,
            diags: &mut self.diags,
        };
        let result = match &mut self.section {
            Section::None => Err(format!(
                "'{keyword}' is outside any section: start with one of {}",
                SECTIONS.join(", ")
            )),
            Section::Skip => Ok(()),
            Section::Global => {
                if keyword == "stats" {
                    self.cli_proxy_at.get_or_insert(self.proxies.len());
                }
                global_line(&mut self.global, &mut ctx)
            }
            Section::Proxy(draft) => proxy_line(draft, &mut ctx),
            Section::Etcd(draft) => etcd::etcd_line(draft, &mut ctx),
            Section::Resolvers(r) => resolvers::resolvers_line(r, &mut ctx),
            Section::Userlist(list) => userlist::userlist_line(list, &mut ctx),
        };
        if let Err(message) = result {
            let hint = line.variable_hint(&message).unwrap_or_default();
            self.diags.error(&line.loc, message + &hint);
        }
    }

    fn close_section(&mut self) {
        match std::mem::replace(&mut self.section, Section::None) {
            Section::Proxy(draft) => self.close_proxy(*draft),
            Section::Etcd(draft) => self.etcd.push(draft),
            Section::Resolvers(r) => self.resolvers.push(r),
            Section::Userlist(list) => self.userlists.push(list),
            Section::None | Section::Global | Section::Skip => {}
        }
    }

    fn close_proxy(&mut self, draft: ProxyDraft) {
        if draft.kind == ProxyKind::Defaults {
            if !draft.name.is_empty() {
                self.named_defaults
                    .insert(draft.name.clone(), draft.clone());
            }
            self.defaults = draft;
        } else {
            self.proxies.push(draft);
        }
    }

    fn open_section(&mut self, line: &Line) {
        let keyword = line.words[0].as_str();
        let args: Vec<&str> = line.words[1..].iter().map(|w| w.as_str()).collect();
        let loc = &line.loc;
        if keyword == "global" {
            if let Some(extra) = args.first() {
                self.diags
                    .error(loc, format!("'global' takes no argument, got '{extra}'"));
            }
            self.section = Section::Global;
            return;
        }
        if keyword == "etcd" {
            self.open_etcd(&args, loc);
            return;
        }
        if keyword == "userlist" {
            self.open_userlist(&args, loc);
            return;
        }
        if keyword == "resolvers" {
            self.open_resolvers(&args, loc);
            return;
        }
        let kind = match keyword {
            "defaults" => ProxyKind::Defaults,
            "frontend" => ProxyKind::Frontend,
            "backend" => ProxyKind::Backend,
            _ => ProxyKind::Listen,
        };
        // `defaults [NAME] [from DEF]`, `frontend NAME [from DEF]`.
        let (name, from) = match args.as_slice() {
            [] | ["from", ..] if kind != ProxyKind::Defaults => {
                self.diags.error(
                    loc,
                    format!("missing name for '{keyword}' section (write '{keyword} NAME')"),
                );
                (format!("<unnamed {keyword} at line {}>", loc.line), None)
            }
            [] => (String::new(), None),
            ["from", def] => (String::new(), Some(*def)),
            [name] => (name.to_string(), None),
            [name, "from", def] => (name.to_string(), Some(*def)),
            [_, "from", _, extra, ..] | [_, extra, ..] => {
                let message = proxy::address_on_header(kind, &args).unwrap_or_else(|| {
                    format!("'{keyword}': unexpected argument '{extra}' (write '{keyword} NAME [from DEFAULTS]')")
                });
                self.diags.error(loc, message);
                (args[0].to_string(), None)
            }
        };
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
            .filter(|_| !name.starts_with("<unnamed"))
        {
            self.diags.error(
                loc,
                format!("character '{c}' is not permitted in {keyword} name '{name}'"),
            );
        }
        if kind != ProxyKind::Defaults {
            self.check_duplicate(kind, &name, loc);
        }
        let base = match from {
            None => &self.defaults,
            Some(def) => match self.named_defaults.get(def) {
                Some(d) => d,
                None => {
                    let known = self.named_defaults.keys().map(String::as_str);
                    let hint = did_you_mean(def, known);
                    self.diags
                        .error(loc, format!("no 'defaults' section named '{def}'{hint}"));
                    &self.defaults
                }
            },
        };
        let draft = if kind == ProxyKind::Defaults && from.is_none() {
            // A new `defaults` resets to the built-in values.
            ProxyDraft::new(kind, name, loc.clone())
        } else {
            ProxyDraft::inherit(base, kind, name, loc.clone())
        };
        self.section = Section::Proxy(Box::new(draft));
    }

    /// The name of a `KEYWORD NAME` section header (`etcd`, `resolvers`), checked like proxy
    /// names; a stand-in when it is missing (the error is recorded).
    fn section_name(&mut self, keyword: &str, args: &[&str], loc: &Loc) -> String {
        let name = match args {
            [name] => name.to_string(),
            [] => {
                self.diags.error(
                    loc,
                    format!("missing name for '{keyword}' section (write '{keyword} NAME')"),
                );
                return format!("<unnamed {keyword} at line {}>", loc.line);
            }
            [name, extra, ..] => {
                self.diags.error(
                    loc,
                    format!("'{keyword}': unexpected argument '{extra}' (write '{keyword} NAME')"),
                );
                name.to_string()
            }
        };
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
        {
            self.diags.error(
                loc,
                format!("character '{c}' is not permitted in {keyword} name '{name}'"),
            );
        }
        name
    }

    /// `etcd NAME`: names are checked like proxy names, and must be unique among `etcd`
    /// sections (the `discover` lines refer to them).
    fn open_etcd(&mut self, args: &[&str], loc: &Loc) {
        let name = self.section_name("etcd", args, loc);
        if let Some(prev) = self.etcd.iter().find(|e| e.name == name) {
            self.diags.error(
                loc,
                format!(
                    "etcd section '{name}' is declared twice (first at {})",
                    prev.loc
                ),
            );
        }
        self.section = Section::Etcd(EtcdDraft {
            name,
            loc: loc.clone(),
            endpoints: Vec::new(),
            user: None,
            password: None,
            dial_timeout: None,
            prefix: None,
        });
    }

    /// `resolvers NAME`: names must be unique among `resolvers` sections.
    fn open_resolvers(&mut self, args: &[&str], loc: &Loc) {
        let name = self.section_name("resolvers", args, loc);
        if let Some(prev) = self.resolvers.iter().find(|r| r.name == name) {
            self.diags.error(
                loc,
                format!(
                    "resolvers section '{name}' is declared twice (first at {})",
                    prev.loc
                ),
            );
        }
        self.section = Section::Resolvers(resolvers::section(name, loc.clone()));
    }

    /// `userlist NAME`: a second section of the same name is ignored with a warning, as HAProxy.
    fn open_userlist(&mut self, args: &[&str], loc: &Loc) {
        let name = match args {
            [name] => name.to_string(),
            [] => {
                self.diags
                    .error(loc, "'userlist' expects <name> as argument");
                self.section = Section::Skip;
                return;
            }
            [_, extra, ..] => {
                self.diags.error(
                    loc,
                    format!("'userlist': unexpected argument '{extra}' (write 'userlist NAME')"),
                );
                self.section = Section::Skip;
                return;
            }
        };
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
        {
            self.diags.error(
                loc,
                format!("character '{c}' is not permitted in 'userlist' name '{name}'"),
            );
        }
        if self.userlists.iter().any(|u| u.name == name) {
            self.diags
                .warn(loc, format!("ignoring duplicated userlist '{name}'"));
            self.section = Section::Skip;
            return;
        }
        self.section = Section::Userlist(Userlist {
            name,
            loc: loc.clone(),
            users: Vec::new(),
            groups: Vec::new(),
        });
    }

    /// HAProxy's rule: two proxies may share a name only if one is a pure frontend and the
    /// other a pure backend.
    fn check_duplicate(&mut self, kind: ProxyKind, name: &str, loc: &Loc) {
        let clash = self.proxies.iter().find(|p| {
            p.name == name
                && (p.kind.has_frontend() && kind.has_frontend()
                    || p.kind.has_backend() && kind.has_backend())
        });
        if let Some(prev) = clash {
            self.diags.error(
                loc,
                format!(
                    "{} '{name}' has the same name as {} '{name}' declared at {}",
                    kind.keyword(),
                    prev.kind.keyword(),
                    prev.loc
                ),
            );
        }
    }
}

fn global_line(g: &mut Global, ctx: &mut Ctx) -> Result<(), String> {
    let keyword = ctx.keyword;
    if let Some(parse) = global::find(keyword) {
        return parse(g, ctx);
    }
    if let Some(refused) = unsupported::find(unsupported::GLOBAL_REFUSED, keyword) {
        return Err(format!("'{keyword}' {}", refused.why));
    }
    if let Some(kw) = proxy::find(keyword) {
        return Err(format!(
            "'{keyword}' is not a 'global' keyword: it belongs in a proxy section ({})",
            kw.sections.names()
        ));
    }
    Err(format!(
        "unknown keyword '{keyword}' in 'global' section{}",
        did_you_mean(keyword, global::GLOBAL_KEYWORDS.iter().map(|k| k.name))
    ))
}

fn proxy_line(p: &mut ProxyDraft, ctx: &mut Ctx) -> Result<(), String> {
    let keyword = ctx.keyword;
    let section = p.kind.keyword();
    if let Some(kw) = proxy::find(keyword) {
        if !kw.sections.contains(p.kind) {
            return Err(format!(
                "'{keyword}' is not allowed in a '{section}' section (valid in: {})",
                kw.sections.names()
            ));
        }
        return (kw.parse)(p, ctx);
    }
    if let Some(refused) = unsupported::find(unsupported::PROXY_REFUSED, keyword) {
        return Err(format!("'{keyword}' {}", refused.why));
    }
    if global::find(keyword).is_some() && keyword != "maxconn" {
        return Err(format!(
            "'{keyword}' is not allowed in a '{section}' section: it belongs in 'global'"
        ));
    }
    Err(format!(
        "unknown keyword '{keyword}' in '{section}' section{}",
        did_you_mean(
            keyword,
            keywords::proxy::PROXY_KEYWORDS.iter().map(|k| k.name)
        )
    ))
}
