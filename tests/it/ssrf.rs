//! Seller-supplied image URLs reach only public hosts (and the development image host allowed by
//! config), end to end: API → Postgres → worker process → a real listener the test starts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::{Platform, eventually};
use plugin::{Config, Runner, Step};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

/// A real HTTP server on 127.0.0.1 that records the path of every request it gets and answers
/// with `reply(path)`, a whole raw response.
struct Listener {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (seen, reply) = (paths.clone(), Arc::new(reply));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                let (seen, reply) = (seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let _ = sock.write_all(&reply(&path)).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { port, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, b'x', 0xFF, 0xD9];

/// Settings that point the catalogue's development image host (`https://img.example/`) at
/// `host` and allow it, as `./run` does for the Etsy simulator.
fn image_host(host: &str) -> [(&'static str, String); 2] {
    [
        (
            "STOFLOW_MARKETPLACES__IMAGES__FETCH_REWRITE_TO",
            format!("http://{host}/"),
        ),
        (
            "STOFLOW_MARKETPLACES__IMAGES__ALLOW_HOSTS",
            format!("[{host:?}]"),
        ),
    ]
}

async fn start(extra: &[(&'static str, String)]) -> Platform {
    let refs: Vec<(&'static str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Platform::start(1, &refs).await
}

/// Etsy listings the simulator holds (any state), with their images.
async fn etsy_listings(p: &Platform) -> Vec<Value> {
    let state = p.sim_get("etsy", "/_admin/state").await;
    state["listings"].as_array().cloned().unwrap_or_default()
}

fn message(job: &Value) -> &str {
    job["last_error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn images_on_internal_addresses_fail_the_etsy_publish_without_a_request_to_them() {
    // An internal service that would answer (with a status the seller must never learn).
    let internal = Listener::start(|_| response("401 Unauthorized", "", b"{}")).await;
    let p = start(&[]).await;
    p.connect("etsy").await;
    let port = internal.port;
    let urls = [
        format!("http://127.0.0.1:{port}/v1/queues"),
        format!("http://2130706433:{port}/v1/queues"), // 127.0.0.1 in decimal
        format!("http://[::ffff:127.0.0.1]:{port}/v1/queues"),
        format!("http://localhost:{port}/v1/queues"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ];
    for url in &urls {
        let product = p.product(json!({ "images": [url] })).await;
        let job = p.publish(product, &["etsy"]).await[0];
        let dead = p.api.wait_state(job, "dead", T).await;
        assert_eq!(dead["last_error"]["class"], "rejected", "{dead}");
        assert_eq!(
            message(&dead),
            format!("etsy images: image 0 ({url}) is not a public image URL"),
            "{dead}"
        );
    }
    assert_eq!(
        internal.paths(),
        Vec::<String>::new(),
        "no request reached it"
    );
    // Drafts exist (made before the images), but not one image was uploaded or activated.
    let listings = etsy_listings(&p).await;
    assert_eq!(listings.len(), urls.len(), "{listings:?}");
    for l in &listings {
        assert_eq!(l["images"].as_array().map_or(0, Vec::len), 0, "{l}");
        assert_eq!(l["state"], "draft", "{l}");
    }
}

#[tokio::test]
async fn a_redirect_from_the_image_host_to_an_internal_address_is_not_followed() {
    let internal =
        Listener::start(|_| response("200 OK", "content-type: image/jpeg\r\n", JPEG)).await;
    let to = format!("http://127.0.0.1:{}/secret.jpg", internal.port);
    // The development image host, allowed by config: it redirects, or fails with a 503.
    let host = Listener::start(move |path| match path {
        "/down.jpg" => response("503 Service Unavailable", "", b"upstream 10.0.0.7 down"),
        _ => response("302 Found", &format!("location: {to}\r\n"), b""),
    })
    .await;
    let p = start(&image_host(&host.host())).await;
    p.connect("etsy").await;

    let product = p
        .product(json!({ "images": ["https://img.example/1.jpg"] }))
        .await;
    let job = p.publish(product, &["etsy"]).await[0];
    let dead = p.api.wait_state(job, "dead", T).await;
    assert_eq!(
        message(&dead),
        "etsy images: image 0 (https://img.example/1.jpg) is not a public image URL",
        "{dead}"
    );
    assert_eq!(host.paths(), vec!["/1.jpg".to_string()]);
    assert_eq!(
        internal.paths(),
        Vec::<String>::new(),
        "the hop was refused"
    );

    // A 5xx is retried until attempts run out, and the seller sees neither the status nor the host's text.
    let product = p
        .product(json!({ "images": ["https://img.example/down.jpg"] }))
        .await;
    let job = p.publish(product, &["etsy"]).await[0];
    let failed = p.api.wait_state(job, "dead", T).await;
    assert!(failed["attempt"].as_i64() > Some(1), "retried: {failed}");
    assert_eq!(
        failed["last_error"]["class"], "image_unavailable",
        "{failed}"
    );
    let neutral = "image 0 (https://img.example/down.jpg) could not be fetched";
    assert_eq!(failed["errors"][0]["message"], neutral, "{failed}");
    assert!(message(&failed).starts_with(neutral), "{failed}");
    for e in failed["errors"].as_array().unwrap() {
        let m = e["message"].as_str().unwrap();
        assert!(!m.contains("503") && !m.contains("10.0.0.7"), "{m}");
    }
}

#[tokio::test]
async fn what_the_image_host_serves_must_be_an_image() {
    let host = Listener::start(|path| match path {
        "/page.jpg" => response(
            "200 OK",
            "content-type: text/html\r\n",
            b"<html>admin</html>",
        ),
        _ => response("200 OK", "content-type: image/jpeg\r\n", JPEG),
    })
    .await;
    let p = start(&image_host(&host.host())).await;
    p.connect("etsy").await;
    let product = p
        .product(json!({ "images": ["https://img.example/1.jpg", "https://img.example/page.jpg"] }))
        .await;
    let job = p.publish(product, &["etsy"]).await[0];
    let dead = p.api.wait_state(job, "dead", T).await;
    assert_eq!(
        message(&dead),
        "etsy images: image 1 (https://img.example/page.jpg) could not be fetched: not an image",
        "{dead}"
    );
    // The first (a real JPEG from the allowed development host) was uploaded.
    let listings = etsy_listings(&p).await;
    assert_eq!(
        listings[0]["images"].as_array().unwrap().len(),
        1,
        "{listings:?}"
    );
}

#[tokio::test]
async fn the_extension_downloads_photos_from_the_development_image_host() {
    let host = Listener::start(|_| response("200 OK", "content-type: image/jpeg\r\n", JPEG)).await;
    let p = start(&image_host(&host.host())).await;
    let v = p.connect_vinted("87654321", "stoflow_seller").await;
    let product = p
        .product(
            json!({"title": "Merino wool scarf", "description": "Soft merino wool, barely worn.",
            "size": "M", "color": "navy", "condition": "very_good", "price": "25.00",
            "images": ["https://img.example/1.jpg", "https://img.example/2.jpg"]}),
        )
        .await;
    let job = p.publish(product, &["vinted"]).await[0];

    // The runner as a seller runs it: downloading each photo URL it is handed.
    let mut cfg = Config::for_simulator(
        &p.api.base,
        v["plugin_token"].as_str().unwrap(),
        &p.sims.vinted_url,
    );
    cfg.placeholder_photos = false;
    let r = Runner::new(cfg);
    let deadline = Instant::now() + T;
    let outcome = loop {
        if let Step::Ran { outcome, .. } = r.step().await.expect("runner step") {
            break outcome;
        }
        assert!(Instant::now() < deadline, "the runner ran no task");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(outcome, "succeeded");
    p.api.wait_state(job, "done", T).await;
    eventually(T, "both photos fetched", || async {
        host.paths().len() >= 2
    })
    .await;
    assert_eq!(
        host.paths(),
        vec!["/1.jpg".to_string(), "/2.jpg".to_string()]
    );
}
