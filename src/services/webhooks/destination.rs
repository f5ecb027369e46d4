//! Where deliveries may go (SSRF): a destination is checked when a subscription is created and
//! again at every delivery. At delivery the HTTP client resolves names through
//! [`CheckingResolver`], which refuses a name if any of its addresses is in a refused range, and
//! the connection goes to the addresses it checked: a name that resolved to a public address when
//! the subscription was made and to 127.0.0.1 now (DNS rebinding) is refused before anything
//! connects. IP-literal URLs never reach a resolver, so [`Outbound::client_for`] checks them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::Settings;
use crate::domain::destinations::{self, AllowList, NameLookup, Refusal};

/// The system resolver (`getaddrinfo` on a blocking thread).
struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Resolves for the delivery client, refusing names that reach a refused range.
struct CheckingResolver {
    lookup: Arc<dyn NameLookup>,
    allow: Arc<AllowList>,
    plain_http: bool,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (lookup, allow, plain_http) = (self.lookup.clone(), self.allow.clone(), self.plain_http);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = resolve_checked(lookup.as_ref(), &allow, &host, plain_http).await?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

async fn resolve_checked(
    lookup: &dyn NameLookup,
    allow: &AllowList,
    host: &str,
    plain_http: bool,
) -> Result<Vec<IpAddr>, Refusal> {
    let ips = lookup.lookup(host).await.unwrap_or_default();
    destinations::check_addresses(host, &ips, allow, plain_http)?;
    Ok(ips)
}

/// The host of a URL: an address (checked here) or a name (checked when resolved).
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Parses `url` and checks what can be checked without resolving: the scheme, and an IP-literal
/// host. Returns the host and whether the URL is plain `http://`.
fn precheck(url: &str, allow: &AllowList) -> Result<(Host, bool), Refusal> {
    let parsed = reqwest::Url::parse(url).map_err(|_| Refusal::NotHttp)?;
    let plain_http = match parsed.scheme() {
        "https" => false,
        "http" => true,
        _ => return Err(Refusal::NotHttp),
    };
    // The parser has already turned every spelling of an address (`2130706433`, `0x7f.1`)
    // into its canonical form; IPv6 comes bracketed.
    let host = match parsed.host_str() {
        Some(h) => match h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(h.to_owned()),
        },
        None => return Err(Refusal::NotHttp),
    };
    if let Host::Ip(ip) = host {
        destinations::check_address(&ip.to_string(), ip, allow, plain_http)?;
    }
    Ok((host, plain_http))
}

/// The outbound side of webhooks: the checks, and one client per scheme whose resolver applies
/// them. Built once (scheduler, `granulo alerts run`); cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    https: reqwest::Client,
    http: reqwest::Client,
    allow: Arc<AllowList>,
}

impl Outbound {
    /// Fails only when the TLS backend cannot start; a default client would skip the checks.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let allow = Arc::new(settings.webhook_allow.clone());
        let lookup: Arc<dyn NameLookup> = settings
            .webhook_lookup
            .0
            .clone()
            .unwrap_or_else(|| Arc::new(SystemLookup));
        let client = |plain_http: bool| {
            reqwest::Client::builder()
                // A receiver answers; it does not send signed payloads elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would resolve and connect itself, past the checks.
                .no_proxy()
                .dns_resolver(Arc::new(CheckingResolver {
                    lookup: lookup.clone(),
                    allow: allow.clone(),
                    plain_http,
                }))
                .user_agent(concat!("granulo/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("the webhook HTTP client cannot be built: {e}"))
        };
        Ok(Self {
            https: client(false)?,
            http: client(true)?,
            allow,
        })
    }

    /// The client to send to `url` with, after the checks that need no resolving.
    pub fn client_for(&self, url: &str) -> Result<&reqwest::Client, Refusal> {
        let (_, plain_http) = precheck(url, &self.allow)?;
        Ok(if plain_http { &self.http } else { &self.https })
    }
}

/// The check of a subscription's URL (created or changed): scheme, and every address the host
/// resolves to now. A name that does not resolve yet is accepted over https (every delivery
/// resolves and checks again) and refused over http, which only allowed networks may use.
pub async fn check_destination(settings: &Settings, url: &str) -> Result<(), Refusal> {
    let allow = &settings.webhook_allow;
    match precheck(url, allow)? {
        (Host::Ip(_), _) => Ok(()),
        (Host::Name(host), plain_http) => {
            if allow.allows_host(&host) {
                return Ok(());
            }
            let lookup: Arc<dyn NameLookup> = settings
                .webhook_lookup
                .0
                .clone()
                .unwrap_or_else(|| Arc::new(SystemLookup));
            match resolve_checked(lookup.as_ref(), allow, &host, plain_http).await {
                Err(Refusal::Unresolved { .. }) if !plain_http => Ok(()),
                other => other.map(|_| ()),
            }
        }
    }
}

/// What `last_error` records of a failed send: a refusal in full (it names the host and the
/// range, as the 422 at subscription time does), otherwise only the kind of failure. The
/// transport's own text (addresses, OS errors, TLS details) is not shown: it would let an admin
/// probe hosts by reading the log.
pub fn failure_text(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return format!("refused: {refusal}");
        }
        source = err.source();
    }
    if e.is_timeout() {
        "timed out (10 s)".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prechecks_scheme_and_ip_literals() {
        let none = AllowList::default();
        let refused = |url: &str| precheck(url, &none).err();
        assert_eq!(refused("ftp://example.org/x"), Some(Refusal::NotHttp));
        assert_eq!(refused("not a url"), Some(Refusal::NotHttp));
        assert!(matches!(refused("https://127.0.0.1/x"), Some(Refusal::Range { .. })));
        assert!(matches!(refused("https://[::1]:8443/x"), Some(Refusal::Range { .. })));
        assert!(matches!(
            refused("https://[::ffff:a9fe:a9fe]/x"),
            Some(Refusal::Range { .. })
        ));
        // WHATWG parsing turns other spellings of an address into the address.
        assert!(matches!(refused("https://2130706433/x"), Some(Refusal::Range { .. })));
        assert!(matches!(refused("https://0x7f.1/x"), Some(Refusal::Range { .. })));
        assert!(matches!(
            refused("http://93.184.215.14/x"),
            Some(Refusal::PlainHttp { .. })
        ));
        assert_eq!(refused("https://93.184.215.14/x"), None);
        assert_eq!(
            refused("https://hooks.example.org/x"),
            None,
            "names are checked when resolved"
        );
        let allow = AllowList::parse("127.0.0.0/8").expect("parses");
        assert!(precheck("http://127.0.0.1:9/x", &allow).is_ok());
    }
}
