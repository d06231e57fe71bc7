//! Name resolution for every HTTP client, plugged into ureq through its resolver extension
//! point. ureq's own resolver looks a name up on every request, pooled connection or not, and
//! spawns a thread for each lookup when the request has a timeout (every request here has
//! one): a thread per request. This one uses IP literals as they are, keeps host names for
//! [`FRESH_FOR`], and looks a name up again only when it is stale — on one thread per host at a
//! time, while requests go on with the addresses they had. A first lookup is still bounded by
//! the request's deadline.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up name is used before it is looked up again (DNS answers on Fly's
/// private network and in public DNS live at least this long).
const FRESH_FOR: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered, so a dead name is not looked up by every request.
const FAILED_FOR: Duration = Duration::from_secs(1);
/// ureq keeps at most this many addresses of a name.
const MAX_ADDRS: usize = 16;
/// The longest a request waits for a first lookup when it has no deadline of its own.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// The process-wide cache behind every agent.
#[derive(Debug, Default)]
pub struct CachingResolver;

#[derive(Debug)]
enum Entry {
    Resolved {
        at: Instant,
        addrs: Vec<SocketAddr>,
    },
    /// A lookup is running; `stale` are the addresses of the last one, if any.
    Pending {
        stale: Option<Vec<SocketAddr>>,
    },
    Failed {
        at: Instant,
    },
}

#[derive(Default)]
struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    changed: Condvar,
}

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses of `host_port`, from the cache or a lookup bounded by `wait`.
    fn addresses(&'static self, host_port: &str, wait: Duration) -> Result<Vec<SocketAddr>, Miss> {
        let deadline = Instant::now() + wait;
        let mut entries = self.lock();
        loop {
            match entries.get(host_port) {
                Some(Entry::Resolved { at, addrs }) if at.elapsed() < FRESH_FOR => {
                    return Ok(addrs.clone());
                }
                Some(Entry::Resolved { addrs, .. }) => {
                    let addrs = addrs.clone();
                    entries.insert(
                        host_port.to_string(),
                        Entry::Pending {
                            stale: Some(addrs.clone()),
                        },
                    );
                    self.look_up(host_port);
                    return Ok(addrs);
                }
                Some(Entry::Pending { stale: Some(addrs) }) => return Ok(addrs.clone()),
                Some(Entry::Failed { at }) if at.elapsed() < FAILED_FOR => {
                    return Err(Miss::NotFound);
                }
                Some(Entry::Pending { stale: None }) => {
                    let left = deadline
                        .checked_duration_since(Instant::now())
                        .filter(|d| !d.is_zero())
                        .ok_or(Miss::Timeout)?;
                    entries = self
                        .changed
                        .wait_timeout(entries, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None | Some(Entry::Failed { .. }) => {
                    entries.insert(host_port.to_string(), Entry::Pending { stale: None });
                    self.look_up(host_port);
                }
            }
        }
    }

    /// Looks `host_port` up on a thread of its own; the result lands in the cache.
    fn look_up(&'static self, host_port: &str) {
        let key = host_port.to_string();
        let spawned = std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                let result = key.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
                let mut entries = self.lock();
                let stale = match entries.remove(&key) {
                    Some(Entry::Pending { stale }) => stale,
                    _ => None,
                };
                let entry = match (result, stale) {
                    (Ok(addrs), _) if !addrs.is_empty() => Entry::Resolved {
                        at: Instant::now(),
                        addrs,
                    },
                    // Keep serving the last addresses, and try again shortly.
                    (_, Some(addrs)) => Entry::Resolved {
                        at: Instant::now() - FRESH_FOR + FAILED_FOR,
                        addrs,
                    },
                    _ => Entry::Failed { at: Instant::now() },
                };
                entries.insert(key, entry);
                drop(entries);
                self.changed.notify_all();
            });
        if spawned.is_err() {
            // No thread to spare: the waiters time out, and the next request tries again.
            self.lock().remove(host_port);
        }
    }
}

enum Miss {
    NotFound,
    Timeout,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return DefaultResolver::default().resolve(uri, config, timeout);
        };
        let host_port =
            DefaultResolver::host_and_port(scheme, authority).ok_or(ureq::Error::HostNotFound)?;
        let addrs = match host_port.parse::<SocketAddr>() {
            Ok(literal) => vec![literal],
            Err(_) => {
                let wait = if timeout.after.is_not_happening() {
                    LONGEST_WAIT
                } else {
                    *timeout.after
                };
                cache()
                    .addresses(&host_port, wait)
                    .map_err(|miss| match miss {
                        Miss::NotFound => ureq::Error::HostNotFound,
                        Miss::Timeout => ureq::Error::Timeout(timeout.reason),
                    })?
            }
        };
        let mut result = self.empty();
        for addr in config
            .ip_family()
            .keep_wanted(addrs.into_iter())
            .take(MAX_ADDRS)
        {
            result.push(addr);
        }
        if result.is_empty() {
            Err(ureq::Error::HostNotFound)
        } else {
            Ok(result)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(url: &str) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = url.parse().unwrap();
        let config = ureq::Agent::config_builder().build();
        let timeout = NextTimeout {
            after: ureq::unversioned::transport::time::Duration::Exact(Duration::from_secs(5)),
            ..NextTimeout::default()
        };
        CachingResolver
            .resolve(&uri, &config, timeout)
            .map(|a| a.iter().copied().collect())
    }

    #[test]
    fn ip_literals_are_used_as_they_are() {
        assert_eq!(
            resolve("http://127.0.0.1:9090/x").unwrap(),
            ["127.0.0.1:9090".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolve("https://[::1]/").unwrap(),
            ["[::1]:443".parse::<SocketAddr>().unwrap()]
        );
        assert!(
            !cache().lock().contains_key("127.0.0.1:9090"),
            "literals never reach the cache"
        );
    }

    #[test]
    fn names_are_looked_up_once_while_fresh() {
        let first = resolve("http://localhost:4280/").unwrap();
        assert!(
            first
                .iter()
                .all(|a| a.port() == 4280 && a.ip().is_loopback())
        );
        assert!(matches!(
            cache().lock().get("localhost:4280"),
            Some(Entry::Resolved { .. })
        ));
        // A stale entry is served while one refresh runs.
        cache().lock().insert(
            "localhost:4280".into(),
            Entry::Resolved {
                at: Instant::now() - FRESH_FOR - Duration::from_secs(1),
                addrs: vec!["127.0.0.9:4280".parse().unwrap()],
            },
        );
        assert_eq!(
            resolve("http://localhost:4280/").unwrap(),
            ["127.0.0.9:4280".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn unknown_names_fail_without_a_storm() {
        let err = resolve("http://no-such-host.invalid:1/").unwrap_err();
        assert!(matches!(err, ureq::Error::HostNotFound), "{err}");
        assert!(matches!(
            cache().lock().get("no-such-host.invalid:1"),
            Some(Entry::Failed { .. })
        ));
    }
}
