//! Ids survive a restart: a simulator process started after another never reissues its ids, so a
//! platform database kept across `./run`s never sees an old id again for a new object.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::{body, client, multipart};

/// `stoflow-sim` on free ports: the process and its (eBay, Vinted) base URLs from its banner.
fn spawn_sim() -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stoflow-sim"))
        .args(["--ebay-port", "0", "--etsy-port", "0", "--vinted-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stoflow-sim");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = |prefix: &str| {
        let line = lines.next().expect("banner line").expect("read banner");
        assert!(line.starts_with(prefix), "{line}");
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    let ebay = url("eBay");
    url("Etsy");
    let vinted = url("Vinted");
    (child, ebay, vinted)
}

/// One eBay order id and one Vinted photo id issued by the simulator at these URLs.
async fn issue_ids(ebay: &str, vinted: &str) -> (String, u64) {
    let c = client();
    let r = c
        .post(format!("{ebay}/_admin/orders"))
        .json(&json!({"line_items": [{"sku": "S1", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let order = body(r).await["orderId"].as_str().unwrap().to_string();
    let s = sim::vinted::Settings::default();
    let (ct, bytes) = multipart(
        &[("photo[type]", "item"), ("photo[temp_uuid]", "u-1")],
        "photo[file]",
        b"\xff\xd8jpeg",
    );
    let r = c
        .post(format!("{vinted}/api/v2/photos"))
        .bearer_auth(&s.access_token)
        .header("X-CSRF-Token", &s.csrf_token)
        .header("content-type", ct)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (order, body(r).await["id"].as_u64().unwrap())
}

#[tokio::test]
async fn a_restarted_simulator_process_does_not_reissue_the_first_ones_ids() {
    let (mut first, ebay, vinted) = spawn_sim();
    let (order1, photo1) = issue_ids(&ebay, &vinted).await;
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, ebay, vinted) = spawn_sim();
    let (order2, photo2) = issue_ids(&ebay, &vinted).await;
    second.kill().unwrap();
    second.wait().unwrap();

    assert_ne!(order1, order2, "eBay order ids repeat across restarts");
    assert!(photo2 > photo1, "Vinted ids repeat: {photo1} then {photo2}");
    // Still eBay's order id shape.
    assert_eq!(
        order2.split('-').map(str::len).collect::<Vec<_>>(),
        [2, 5, 5],
        "{order2}"
    );
}
