//! Configuration reload (SIGHUP, `systemctl reload`): which changes a
//! running daemon can take, and which wait for a restart.
//!
//! [`plan`] compares the running configuration with the re-read file.
//! Changes it lists in [`ReloadPlan::apply`] are taken at once by
//! [`Reloader::reload`](crate::app::Reloader::reload) (and the log level by `main`);
//! every other change is named in [`ReloadPlan::restart_needed`] and left
//! alone, so the daemon keeps running exactly what it runs now for those.
//! A file that does not parse or validate changes nothing.
//!
//! Reloadable now: the log level, the size bounds (`[store] max_size`,
//! `[publisher] cache_size`, `[hosted_cache] replay_max_size`), the origin URLs
//! (`[proxy] upstream`, `[publisher] upstream`), the fixed peers
//! (`[proxy] peers`) and the hosted cache's addresses
//! (`[upstream_hosted_cache] address` / `https_address` / `server_name`). Listeners, roles
//! coming or going, TLS files, secrets and the store directory need a
//! restart.

use std::net::SocketAddr;

use crate::config::Config;

/// One reloadable setting that changed, with its new value.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `[log] level`.
    LogLevel(String),
    /// `[store] max_size`, bytes.
    StoreMaxSize(u64),
    /// `[proxy] upstream`.
    ProxyUpstream(Option<http::Uri>),
    /// `[proxy] peers`.
    ProxyPeers(Vec<SocketAddr>),
    /// `[publisher] upstream`.
    PublisherUpstream(http::Uri),
    /// `[publisher] cache_size`, bytes.
    PublisherCacheSize(u64),
    /// `[hosted_cache] replay_max_size`, bytes.
    ReplayMaxSize(u64),
    /// `[upstream_hosted_cache] address`, `https_address` and `server_name`
    /// (the last two default from the first).
    HostedCacheAddress {
        /// PCCRR / PCHC v2 listener.
        http: SocketAddr,
        /// PCHC v1 listener.
        https: SocketAddr,
        /// TLS name verified for v1 offers.
        server_name: String,
    },
}

impl Change {
    /// The configuration key, for logs.
    pub const fn key(&self) -> &'static str {
        match self {
            Change::LogLevel(_) => "log.level",
            Change::StoreMaxSize(_) => "store.max_size",
            Change::ProxyUpstream(_) => "proxy.upstream",
            Change::ProxyPeers(_) => "proxy.peers",
            Change::PublisherUpstream(_) => "publisher.upstream",
            Change::PublisherCacheSize(_) => "publisher.cache_size",
            Change::ReplayMaxSize(_) => "hosted_cache.replay_max_size",
            Change::HostedCacheAddress { .. } => "upstream_hosted_cache.address",
        }
    }
}

/// What a reload will do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReloadPlan {
    /// Changes taken now.
    pub apply: Vec<Change>,
    /// Sections (or keys) whose changes need a restart; left as they run.
    pub restart_needed: Vec<&'static str>,
}

impl ReloadPlan {
    /// Nothing changed at all.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.restart_needed.is_empty()
    }
}

/// Compare the running configuration with a newly read one.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan::default();

    if old.log.level != new.log.level {
        p.apply.push(Change::LogLevel(new.log.level.clone()));
    }
    if old.log.format != new.log.format {
        p.restart_needed.push("log.format");
    }

    if old.store.max_size != new.store.max_size {
        p.apply.push(Change::StoreMaxSize(new.store.max_size));
    }
    if old.store.path != new.store.path {
        p.restart_needed.push("store.path");
    }
    if old.admin != new.admin {
        p.restart_needed.push("[admin]");
    }

    match (&old.proxy, &new.proxy) {
        (Some(o), Some(n)) => {
            if o.upstream != n.upstream {
                p.apply.push(Change::ProxyUpstream(n.upstream.clone()));
            }
            if o.peers != n.peers {
                p.apply.push(Change::ProxyPeers(n.peers.clone()));
            }
            let mask = |c: &crate::config::ProxyConfig| {
                let mut c = c.clone();
                c.upstream = None;
                c.peers.clear();
                c
            };
            if mask(o) != mask(n) {
                p.restart_needed
                    .push("[proxy] (other than upstream, peers)");
            }
        }
        (None, None) => {}
        _ => p.restart_needed.push("[proxy]"),
    }

    match (&old.publisher, &new.publisher) {
        (Some(o), Some(n)) => {
            if o.upstream != n.upstream {
                p.apply.push(Change::PublisherUpstream(n.upstream.clone()));
            }
            if o.cache_size != n.cache_size {
                p.apply.push(Change::PublisherCacheSize(n.cache_size));
            }
            let mut masked = n.clone();
            masked.upstream = o.upstream.clone();
            masked.cache_size = o.cache_size;
            if *o != masked {
                p.restart_needed
                    .push("[publisher] (other than upstream, cache_size)");
            }
        }
        (None, None) => {}
        _ => p.restart_needed.push("[publisher]"),
    }

    match (&old.upstream_hosted_cache, &new.upstream_hosted_cache) {
        (Some(o), Some(n)) => {
            if (o.address, o.https_address, &o.server_name)
                != (n.address, n.https_address, &n.server_name)
            {
                p.apply.push(Change::HostedCacheAddress {
                    http: n.address,
                    https: n.https_address,
                    server_name: n.server_name.clone(),
                });
            }
            let mut masked = n.clone();
            masked.address = o.address;
            masked.https_address = o.https_address;
            masked.server_name = o.server_name.clone();
            if *o != masked {
                p.restart_needed.push(
                    "[upstream_hosted_cache] (other than address, https_address, server_name)",
                );
            }
        }
        (None, None) => {}
        _ => p.restart_needed.push("[upstream_hosted_cache]"),
    }

    if old.peer != new.peer {
        p.restart_needed.push("[peer]");
    }
    match (&old.hosted_cache, &new.hosted_cache) {
        (Some(o), Some(n)) => {
            if o.replay_max_size != n.replay_max_size {
                p.apply.push(Change::ReplayMaxSize(n.replay_max_size));
            }
            let mut masked = n.clone();
            masked.replay_max_size = o.replay_max_size;
            if *o != masked {
                p.restart_needed
                    .push("[hosted_cache] (other than replay_max_size)");
            }
        }
        (None, None) => {}
        _ => p.restart_needed.push("[hosted_cache]"),
    }
    p
}

/// The configuration the daemon runs after applying `plan` to `old`: the
/// applied changes taken, everything needing a restart kept as it was.
/// The next reload compares against this.
pub fn running_after(old: &Config, plan: &ReloadPlan) -> Config {
    let mut c = old.clone();
    for change in &plan.apply {
        match change {
            Change::LogLevel(l) => c.log.level = l.clone(),
            Change::StoreMaxSize(n) => c.store.max_size = *n,
            Change::ProxyUpstream(u) => {
                if let Some(p) = c.proxy.as_mut() {
                    p.upstream = u.clone();
                }
            }
            Change::ProxyPeers(peers) => {
                if let Some(p) = c.proxy.as_mut() {
                    p.peers = peers.clone();
                }
            }
            Change::PublisherUpstream(u) => {
                if let Some(p) = c.publisher.as_mut() {
                    p.upstream = u.clone();
                }
            }
            Change::PublisherCacheSize(n) => {
                if let Some(p) = c.publisher.as_mut() {
                    p.cache_size = *n;
                }
            }
            Change::ReplayMaxSize(n) => {
                if let Some(h) = c.hosted_cache.as_mut() {
                    h.replay_max_size = *n;
                }
            }
            Change::HostedCacheAddress {
                http,
                https,
                server_name,
            } => {
                if let Some(u) = c.upstream_hosted_cache.as_mut() {
                    u.address = *http;
                    u.https_address = *https;
                    u.server_name = server_name.clone();
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text, "test").unwrap()
    }

    const BASE: &str = r#"
[store]
path = "/var/lib/branchcache"
max_size = "10 GiB"

[proxy]
listen = "127.0.0.1:8080"
upstream = "http://origin-a.example"
peers = ["10.0.0.5:8082"]

[peer]
listen = "0.0.0.0:8082"
discovery = false

[upstream_hosted_cache]
address = "10.0.0.9:80"
"#;

    #[test]
    fn identical_files_change_nothing() {
        assert!(plan(&parse(BASE), &parse(BASE)).is_empty());
    }

    #[test]
    fn reloadable_keys_are_applied_and_others_wait_for_a_restart() {
        let old = parse(BASE);
        let new = parse(
            &BASE
                .replace("origin-a", "origin-b")
                .replace("10 GiB", "2 GiB")
                .replace("10.0.0.5:8082", "10.0.0.6:8082")
                .replace("10.0.0.9:80", "10.0.0.10:80")
                .replace("127.0.0.1:8080", "127.0.0.1:8081")
                .replace("0.0.0.0:8082", "0.0.0.0:8083"),
        );
        let p = plan(&old, &new);
        let keys: Vec<&str> = p.apply.iter().map(Change::key).collect();
        assert_eq!(
            keys,
            [
                "store.max_size",
                "proxy.upstream",
                "proxy.peers",
                "upstream_hosted_cache.address"
            ]
        );
        assert_eq!(
            p.restart_needed,
            ["[proxy] (other than upstream, peers)", "[peer]"]
        );
        // The running configuration takes the applied keys only.
        let running = running_after(&old, &p);
        assert_eq!(running.store.max_size, 2 << 30);
        let proxy = running.proxy.as_ref().unwrap();
        assert_eq!(proxy.listen, old.proxy.as_ref().unwrap().listen);
        assert_eq!(
            proxy.upstream.as_ref().unwrap().host(),
            Some("origin-b.example")
        );
        assert_eq!(proxy.peers, vec!["10.0.0.6:8082".parse().unwrap()]);
        assert_eq!(running.peer, old.peer);
        // Reloading the same file again only repeats what still waits.
        assert!(plan(&running, &new).apply.is_empty());
    }

    #[test]
    fn roles_coming_or_going_need_a_restart() {
        let old = parse(BASE);
        let new = parse(&format!(
            "{BASE}\n[publisher]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:9\"\nsecret_file = \"/tmp/k\"\n"
        ));
        let p = plan(&old, &new);
        assert!(p.apply.is_empty());
        assert_eq!(p.restart_needed, ["[publisher]"]);
    }

    #[test]
    fn cache_bounds_are_applied() {
        let with = |cache: &str, replay: &str| {
            parse(&format!(
                "{BASE}\n[publisher]\nlisten = \"127.0.0.1:8081\"\nupstream = \"http://127.0.0.1:9\"\n\
                 secret_file = \"/tmp/k\"\ncache_size = \"{cache}\"\n\
                 [hosted_cache]\nlisten_http = \"127.0.0.1:8090\"\nreplay_max_size = \"{replay}\"\n"
            ))
        };
        let p = plan(&with("64 MiB", "10 GiB"), &with("8 MiB", "1 GiB"));
        assert_eq!(
            p.apply,
            vec![
                Change::PublisherCacheSize(8 << 20),
                Change::ReplayMaxSize(1 << 30)
            ]
        );
        assert!(p.restart_needed.is_empty(), "{:?}", p.restart_needed);
    }

    #[test]
    fn log_level_is_applied_and_format_is_not() {
        let old = parse(BASE);
        let new = parse(&format!(
            "{BASE}\n[log]\nlevel = \"debug\"\nformat = \"json\"\n"
        ));
        let p = plan(&old, &new);
        assert_eq!(p.apply, vec![Change::LogLevel("debug".into())]);
        assert_eq!(p.restart_needed, ["log.format"]);
    }
}
