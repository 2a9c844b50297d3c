//! Integration tests: start the simulators through the library on free ports and drive them
//! over HTTP with reqwest, as the platform's clients will.

mod admin;
mod ebay;
mod etsy;
mod restart;
mod vinted;

use std::collections::HashMap;

use reqwest::redirect::Policy;

pub async fn sims() -> sim::Running {
    sim::start(sim::SimConfig::default())
        .await
        .expect("simulators start")
}

/// A client that does not follow redirects, so consent 302s can be inspected.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// The query pairs of a redirect's Location header (decoded once).
pub fn location_query(resp: &reqwest::Response) -> (String, HashMap<String, String>) {
    let loc = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let (base, q) = loc.split_once('?').expect("query in location");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).expect("query");
    (base.to_string(), pairs.into_iter().collect())
}

pub async fn body(resp: reqwest::Response) -> serde_json::Value {
    resp.json().await.expect("json body")
}

/// A multipart body with one file field, built by hand (reqwest's multipart feature is off).
pub fn multipart(fields: &[(&str, &str)], file_field: &str, file: &[u8]) -> (String, Vec<u8>) {
    let b = "SIMBOUNDARY7f3a";
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    out.extend(
        format!("--{b}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
            .as_bytes(),
    );
    out.extend(file);
    out.extend(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), out)
}
