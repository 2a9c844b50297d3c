//! Fetching seller-supplied image URLs without letting a seller reach inside our network.
//!
//! A product's image URL is chosen by the seller, and the worker fetching it sits next to
//! Postgres, the API and cloud metadata services. So a fetch goes only to public addresses:
//! - the URL must be http(s); an IP-literal host is checked before anything is sent (literals
//!   never reach a resolver), a name is resolved by [`PublicResolver`], which hands the
//!   connector only the public addresses it checked (no second lookup a DNS rebind could win);
//! - every redirect hop is checked the same way, and hops are capped;
//! - no proxy (a proxy would resolve the name itself, past our checks);
//! - the body is streamed and abandoned past `max_bytes`, the whole fetch bounded in time, and
//!   it must be a JPEG, PNG, GIF or WebP.
//!
//! Development hosts (the simulator serving `https://img.example/`) are let through only when
//! listed as `host:port` in `[marketplaces.images] allow_hosts`.

#[cfg(test)]
use std::collections::HashMap;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Where product images are fetched from when a marketplace wants the bytes (Etsy uploads).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Image URLs starting with `fetch_rewrite_from` are fetched from `fetch_rewrite_to` + the
    /// rest instead (development: the catalogue's image host is served by the simulators).
    /// Empty: fetch every URL as it is.
    pub fetch_rewrite_from: String,
    pub fetch_rewrite_to: String,
    /// `host:port` pairs fetched although not public (development image hosts); every other
    /// loopback, private or link-local address is refused ([`crate::images`]). Production: empty.
    pub allow_hosts: Vec<String>,
    pub max_bytes: usize,
    pub timeout_ms: u64,
}

/// Redirect hops followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Why a fetch failed. The `Display` text is internal detail for logs; sellers see
/// [`FetchError::seller_reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL: {0}")]
    NotHttp(String),
    #[error("not a public address: {0}")]
    NotPublic(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the host refused it: HTTP {0}")]
    Refused(u16),
    #[error("not an image (content type {0:?})")]
    NotAnImage(String),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// Network failure, timeout or a 5xx: may work later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl FetchError {
    /// Worth trying again later (network trouble, a 5xx); everything else is the seller's to fix.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// What the seller is told: never a status code, address or error text of ours.
    pub fn seller_reason(&self, index: usize, url: &str) -> String {
        match self {
            Self::NotHttp(_) | Self::NotPublic(_) => {
                format!("image {index} ({url}) is not a public image URL")
            }
            Self::TooManyRedirects => {
                format!("image {index} ({url}) could not be fetched: too many redirects")
            }
            Self::Refused(_) => {
                format!("image {index} ({url}) could not be fetched: the host does not serve it")
            }
            Self::NotAnImage(_) => {
                format!("image {index} ({url}) could not be fetched: not an image")
            }
            Self::TooLarge(max) => {
                format!(
                    "image {index} ({url}) could not be fetched: too large (at most {max} bytes)"
                )
            }
            Self::Unavailable(_) => format!("image {index} ({url}) could not be fetched"),
        }
    }
}

/// An image fetched and checked.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// The URL a seller's image is fetched from: in development, the catalogue's image host is
/// served elsewhere (`fetch_rewrite_from` → `fetch_rewrite_to`); otherwise the URL itself.
pub fn fetch_url(s: &ImageSettings, url: &str) -> String {
    match url.strip_prefix(s.fetch_rewrite_from.as_str()) {
        Some(rest) if !s.fetch_rewrite_from.is_empty() => format!("{}{rest}", s.fetch_rewrite_to),
        _ => url.to_string(),
    }
}

/// `host:port` pairs fetched even though not public (development image hosts).
#[derive(Debug, Default)]
struct AllowList {
    pairs: HashSet<(String, u16)>,
    names: HashSet<String>,
}

impl AllowList {
    fn new(entries: &[String]) -> Self {
        let mut a = Self::default();
        for e in entries {
            if let Some((host, port)) = parse_host_port(e) {
                a.names.insert(host.clone());
                a.pairs.insert((host, port));
            }
        }
        a
    }

    fn allows(&self, u: &Url) -> bool {
        match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => self.pairs.contains(&(h.to_ascii_lowercase(), p)),
            _ => false,
        }
    }
}

/// `host:port` (an IPv6 host in brackets) with an explicit port, host lowercased as
/// [`Url::host_str`] gives it; `None` when it is not that shape.
pub fn parse_host_port(entry: &str) -> Option<(String, u16)> {
    let port: u16 = entry.rsplit_once(':')?.1.parse().ok()?;
    let u = Url::parse(&format!("http://{entry}/")).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    // Exactly host:port: no user, path or query slipped in.
    (u.username().is_empty() && u.path() == "/" && u.query().is_none()).then_some((host, port))
}

/// Checks a URL before a request goes to it: http(s), and an IP-literal host must be public
/// (names are checked by [`PublicResolver`] when resolved). Allow-listed hosts pass.
fn check_url(u: &Url, allow: &AllowList) -> Result<(), FetchError> {
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(FetchError::NotHttp(u.scheme().into()));
    }
    let host = u
        .host_str()
        .ok_or_else(|| FetchError::NotHttp("no host".into()))?;
    if allow.allows(u) {
        return Ok(());
    }
    // `Url` has already normalised decimal, octal and hex IPv4 forms (`2130706433`) to dotted.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>()
        && !is_public(ip)
    {
        return Err(FetchError::NotPublic(ip.to_string()));
    }
    Ok(())
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918, CGNAT,
/// unique-local), link-local (the metadata services' 169.254.169.254), multicast, unspecified,
/// broadcast, documentation, benchmarking or otherwise reserved; IPv4 embedded in IPv6
/// (mapped, NAT64, 6to4) is judged as that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                  // "this network", unspecified
        || a == 10                            // private
        || a == 127                           // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10 (and Alibaba's metadata)
        || (a == 169 && b == 254)             // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)     // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)     // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)   // 6to4 relay anycast
        || (a == 192 && b == 168)             // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100)  // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)   // TEST-NET-3
        || a >= 224) // multicast 224/4, reserved 240/4, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(v4(s[6], s[7])); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_public_v4(v4(s[1], s[2])); // 6to4 2002::/16
    }
    // Only global unicast (2000::/3) is public; that also refuses ::, ::1, IPv4-compatible
    // ::a.b.c.d, fc00::/7, fe80::/10, ff00::/8 and the rest. Then its special blocks:
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] == 0)            // Teredo 2001::/32 (hides an IPv4 address)
        && !(s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // benchmarking 2001:2::/48
        && !(s[0] == 0x2001 && s[1] == 0xdb8)        // documentation 2001:db8::/32
        && !(s[0] == 0x2001 && (0x10..0x30).contains(&s[1])) // ORCHID 2001:10::/28, 2001:20::/28
        && (s[0] & 0xfff0) != 0x3ff0 // documentation 3fff::/20
}

/// How names become addresses before [`PublicResolver`] filters them.
#[derive(Clone)]
enum Lookup {
    System,
    /// Fixed answers (tests: a name that resolves to loopback, without a DNS server).
    #[cfg(test)]
    Fixed(Arc<HashMap<String, Vec<IpAddr>>>),
}

/// Resolves names and keeps only public addresses (all of them for allow-listed hosts). The
/// connector connects only to what this returns, so a name that resolves to a public address
/// when checked and to 127.0.0.1 when connecting cannot happen: there is one lookup.
struct PublicResolver {
    lookup: Lookup,
    allow: Arc<AllowList>,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let lookup = self.lookup.clone();
        let allowed = self.allow.names.contains(&host);
        Box::pin(async move {
            let ips: Vec<IpAddr> = match lookup {
                Lookup::System => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
                #[cfg(test)]
                Lookup::Fixed(m) => m.get(&host).cloned().unwrap_or_default(),
            };
            let public: Vec<SocketAddr> = ips
                .iter()
                .filter(|ip| allowed || is_public(**ip))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if public.is_empty() && !ips.is_empty() {
                return Err(Box::new(FetchError::NotPublic(format!("{host} → {ips:?}"))) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Fetches seller-supplied image URLs under the rules in the module doc.
pub struct ImageFetcher {
    http: reqwest::Client,
    allow: Arc<AllowList>,
    settings: ImageSettings,
}

impl ImageFetcher {
    pub fn new(s: &ImageSettings) -> Self {
        Self::with_lookup(s, Lookup::System)
    }

    fn with_lookup(s: &ImageSettings, lookup: Lookup) -> Self {
        let allow = Arc::new(AllowList::new(&s.allow_hosts));
        let hops = allow.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(FetchError::TooManyRedirects);
            }
            match check_url(attempt.url(), &hops) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(s.timeout_ms))
            .connect_timeout(Duration::from_millis(s.timeout_ms.min(10_000)))
            .redirect(policy)
            .no_proxy()
            .dns_resolver(Arc::new(PublicResolver {
                lookup,
                allow: allow.clone(),
            }))
            .user_agent(concat!("stoflow-jobs/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("reqwest client");
        Self {
            http,
            allow,
            settings: s.clone(),
        }
    }

    /// Fetches the seller's `url` (after the development rewrite).
    pub async fn fetch(&self, url: &str) -> Result<Image, FetchError> {
        let target = fetch_url(&self.settings, url);
        let u = Url::parse(&target).map_err(|e| FetchError::NotHttp(e.to_string()))?;
        check_url(&u, &self.allow)?;
        let mut r = self.http.get(u).send().await.map_err(classify)?;
        let status = r.status();
        // A 3xx here had no usable Location; a 4xx is the host saying no.
        if status.is_redirection() || status.is_client_error() {
            return Err(FetchError::Refused(status.as_u16()));
        }
        if !status.is_success() {
            return Err(FetchError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        let max = self.settings.max_bytes;
        if r.content_length().is_some_and(|n| n > max as u64) {
            return Err(FetchError::TooLarge(max));
        }
        let declared = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let mut bytes = Vec::new();
        // Content-Length may lie or be absent: count what actually arrives.
        while let Some(chunk) = r.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        // The declared type must be an accepted image type (or say nothing specific), and the
        // bytes must be one: the marketplace gets what the magic bytes say.
        let declared_ok = matches!(
            declared.as_str(),
            "image/jpeg"
                | "image/png"
                | "image/gif"
                | "image/webp"
                | ""
                | "application/octet-stream"
                | "binary/octet-stream"
        );
        let content_type = sniff(&bytes)
            .filter(|_| declared_ok)
            .ok_or(FetchError::NotAnImage(declared))?;
        Ok(Image {
            bytes,
            content_type,
        })
    }
}

/// An error from reqwest, with our own refusals (from the resolver or a redirect hop) found in
/// its source chain; anything else is the network's fault.
fn classify(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<FetchError>() {
            return f.clone();
        }
        source = s.source();
    }
    FetchError::Unavailable(error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The image type the magic bytes say, if any of those accepted.
fn sniff(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200", // Alibaba metadata (CGNAT)
            "169.254.169.254", // AWS, GCP, Azure metadata
            "169.254.0.1",
            "192.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1", // IPv4-compatible
            "::8.8.8.8",   // IPv4-compatible (deprecated, never routed)
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254", // AWS metadata over IPv6
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:2::1",
            "100::1",
        ] {
            assert!(!is_public(ip(a)), "{a} must not be public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(is_public(ip(a)), "{a} must be public");
        }
    }

    #[test]
    fn urls_to_internal_literals_and_other_schemes_are_refused_before_any_request() {
        let none = AllowList::default();
        for u in [
            "http://127.0.0.1:18181/v1/queues",
            "http://2130706433/", // decimal 127.0.0.1
            "http://0177.0.0.1/", // octal
            "http://0x7f.1/",     // hex, short form
            "http://127.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0:8080/",
            "http://10.1.2.3/x.jpg",
            "https://192.168.0.1/x.jpg",
        ] {
            let e = check_url(&Url::parse(u).unwrap(), &none).unwrap_err();
            assert!(matches!(e, FetchError::NotPublic(_)), "{u}: {e:?}");
        }
        for u in [
            "ftp://example.com/x.jpg",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            let e = check_url(&Url::parse(u).unwrap(), &none).unwrap_err();
            assert!(matches!(e, FetchError::NotHttp(_)), "{u}: {e:?}");
        }
        check_url(&Url::parse("https://img.example/1.jpg").unwrap(), &none).unwrap();
        check_url(&Url::parse("http://8.8.8.8/1.jpg").unwrap(), &none).unwrap();
    }

    #[test]
    fn only_the_listed_host_and_port_are_let_through() {
        let allow = AllowList::new(&["127.0.0.1:8482".into(), "[::1]:9000".into()]);
        let ok = |u: &str| check_url(&Url::parse(u).unwrap(), &allow).is_ok();
        assert!(ok("http://127.0.0.1:8482/_admin/photos/1.jpg"));
        assert!(ok("http://[::1]:9000/x"));
        assert!(!ok("http://127.0.0.1:8483/x"));
        assert!(!ok("http://127.0.0.1/x"));
        assert!(!ok("http://127.0.0.2:8482/x"));
        assert!(!ok("http://[::1]:8482/x"));
        assert_eq!(
            parse_host_port("127.0.0.1:8482"),
            Some(("127.0.0.1".into(), 8482))
        );
        assert_eq!(parse_host_port("Img.Dev:80"), Some(("img.dev".into(), 80)));
        for bad in [
            "127.0.0.1",
            "127.0.0.1:8482/x",
            "user@host:1",
            "host:port",
            "",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_allow_hosts_entry_that_is_not_host_and_port_is_refused_at_boot() {
        let mut s = crate::Settings::defaults();
        s.validate().unwrap();
        s.marketplaces.images.allow_hosts = vec!["127.0.0.1".into()];
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("marketplaces.images.allow_hosts"), "{e}");
    }

    #[test]
    fn the_development_rewrite_applies_to_its_prefix_only() {
        let mut s = crate::Settings::defaults().marketplaces.images;
        s.fetch_rewrite_from = "https://img.example/".into();
        s.fetch_rewrite_to = "http://127.0.0.1:8482/_admin/photos/".into();
        assert_eq!(
            fetch_url(&s, "https://img.example/a/1.jpg"),
            "http://127.0.0.1:8482/_admin/photos/a/1.jpg"
        );
        assert_eq!(
            fetch_url(&s, "https://cdn.example/1.jpg"),
            "https://cdn.example/1.jpg"
        );
        s.fetch_rewrite_from.clear();
        assert_eq!(
            fetch_url(&s, "https://img.example/1.jpg"),
            "https://img.example/1.jpg"
        );
    }

    #[test]
    fn sniffing_knows_the_accepted_formats() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0]), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b""), None);
    }

    /// A real HTTP listener on 127.0.0.1 answering every request with `reply(path)` (a whole
    /// raw response) and counting the requests it got.
    struct Listener {
        port: u16,
        hits: Arc<AtomicUsize>,
    }

    async fn listen(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Listener {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let (counter, reply) = (hits.clone(), Arc::new(reply));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                let (counter, reply) = (counter.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                    let _ = sock.write_all(&reply(&path)).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Listener { port, hits }
    }

    fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status}\r\nconnection: close\r\n{headers}\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn redirect(to: String) -> impl Fn(&str) -> Vec<u8> + Send + Sync + 'static {
        move |_| {
            response(
                "302 Found",
                &format!("location: {to}\r\ncontent-length: 0\r\n"),
                b"",
            )
        }
    }

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, b'x', 0xFF, 0xD9];

    /// A fetcher whose resolver answers `names` (each to 127.0.0.1), allowing `allow`.
    fn fetcher(names: &[&str], allow: &[String], max_bytes: usize) -> ImageFetcher {
        let mut s = crate::Settings::defaults().marketplaces.images;
        s.fetch_rewrite_from.clear();
        s.allow_hosts = allow.to_vec();
        s.max_bytes = max_bytes;
        s.timeout_ms = 5_000;
        let map = names
            .iter()
            .map(|n| (n.to_string(), vec![ip("127.0.0.1")]))
            .collect();
        ImageFetcher::with_lookup(&s, Lookup::Fixed(Arc::new(map)))
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_without_a_request() {
        let target = listen(|_| response("200 OK", "content-type: image/jpeg\r\n", JPEG)).await;
        let f = fetcher(&["rebind.test"], &[], 1000);
        let e = f
            .fetch(&format!("http://rebind.test:{}/a.jpg", target.port))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NotPublic(_)), "{e:?}");
        assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_to_an_internal_address_is_refused_and_never_followed() {
        let target = listen(|_| response("200 OK", "content-type: image/jpeg\r\n", JPEG)).await;
        for to in [
            format!("http://127.0.0.1:{}/secret", target.port),
            format!("http://rebind.test:{}/secret", target.port),
            format!("http://[::ffff:127.0.0.1]:{}/secret", target.port),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            // The first hop is a (development, allow-listed) host we control.
            let hop = listen(redirect(to.clone())).await;
            let allow = vec![format!("img.dev.test:{}", hop.port)];
            let f = fetcher(&["img.dev.test", "rebind.test"], &allow, 1000);
            let e = f
                .fetch(&format!("http://img.dev.test:{}/1.jpg", hop.port))
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::NotPublic(_)), "{to}: {e:?}");
            assert_eq!(hop.hits.load(Ordering::SeqCst), 1, "{to}");
        }
        assert_eq!(target.hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn redirects_are_capped() {
        let hop = Arc::new(std::sync::OnceLock::<u16>::new());
        let h = hop.clone();
        let l = listen(move |p| {
            let n: u32 = p.trim_start_matches('/').parse().unwrap_or(0);
            let to = format!("http://127.0.0.1:{}/{}", h.get().unwrap(), n + 1);
            response(
                "302 Found",
                &format!("location: {to}\r\ncontent-length: 0\r\n"),
                b"",
            )
        })
        .await;
        hop.set(l.port).unwrap();
        let f = fetcher(&[], &[format!("127.0.0.1:{}", l.port)], 1000);
        let e = f
            .fetch(&format!("http://127.0.0.1:{}/0", l.port))
            .await
            .unwrap_err();
        assert_eq!(e, FetchError::TooManyRedirects);
        assert_eq!(l.hits.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn an_allowed_host_is_fetched_and_checked() {
        let l = listen(|p| match p {
            "/ok.jpg" => response(
                "200 OK",
                "content-type: image/jpeg; charset=binary\r\n",
                JPEG,
            ),
            "/raw" => response(
                "200 OK",
                "content-type: application/octet-stream\r\n",
                b"GIF89a....",
            ),
            "/page" => response("200 OK", "content-type: text/html\r\n", b"<html></html>"),
            "/fake.png" => response("200 OK", "content-type: image/png\r\n", b"<html></html>"),
            "/raw-text" => response(
                "200 OK",
                "content-type: application/octet-stream\r\n",
                b"hello",
            ),
            // No Content-Length (read until close): the size cap counts what arrives.
            "/big" => response("200 OK", "content-type: image/jpeg\r\n", &[0xFF; 5000]),
            "/big-declared" => response(
                "200 OK",
                "content-type: image/jpeg\r\ncontent-length: 999999\r\n",
                JPEG,
            ),
            "/gone" => response("404 Not Found", "content-length: 0\r\n", b""),
            _ => response("503 Service Unavailable", "content-length: 0\r\n", b""),
        })
        .await;
        let f = fetcher(&[], &[format!("127.0.0.1:{}", l.port)], 1000);
        let get = async |p: &str| f.fetch(&format!("http://127.0.0.1:{}{p}", l.port)).await;
        let img = get("/ok.jpg").await.unwrap();
        assert_eq!(
            (img.bytes.as_slice(), img.content_type),
            (JPEG, "image/jpeg")
        );
        assert_eq!(get("/raw").await.unwrap().content_type, "image/gif");
        assert!(matches!(get("/page").await, Err(FetchError::NotAnImage(_))));
        assert!(matches!(
            get("/fake.png").await,
            Err(FetchError::NotAnImage(_))
        ));
        assert!(matches!(
            get("/raw-text").await,
            Err(FetchError::NotAnImage(_))
        ));
        assert_eq!(get("/big").await.unwrap_err(), FetchError::TooLarge(1000));
        assert_eq!(
            get("/big-declared").await.unwrap_err(),
            FetchError::TooLarge(1000)
        );
        assert_eq!(get("/gone").await.unwrap_err(), FetchError::Refused(404));
        let e = get("/down").await.unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        // The seller's text carries no status code.
        assert_eq!(
            e.seller_reason(0, "https://img.example/down"),
            "image 0 (https://img.example/down) could not be fetched"
        );
        // A port of the same host that is not listed is refused.
        let other = f
            .fetch(&format!("http://127.0.0.1:{}/ok.jpg", l.port + 1))
            .await;
        assert!(matches!(other, Err(FetchError::NotPublic(_))), "{other:?}");
    }
}
