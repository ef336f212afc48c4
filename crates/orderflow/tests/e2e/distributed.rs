//! Each service in its own process (`orderflow serve`) on a real RocketMQ name server and
//! broker and PostgreSQL: the flows end consistent, and two stock instances in one consumer
//! group share the work — one SIGKILLed mid-load, and still every order ends and stock is
//! conserved. And each service, then the broker, SIGKILLed during load and restarted: every
//! order ends PAID, once, and `orderflow check` finds nothing wrong.

use std::{collections::HashMap, process::Stdio, time::Duration};

use rocketmq_binder::LocalCluster;
use serde_json::{Value, json};
use testkit::*;
use tokio::io::{AsyncBufReadExt, BufReader};

pub(crate) struct Service {
    pub child: tokio::process::Child,
    pub url: String,
}

/// Starts `orderflow serve <service>` on `http_addr`; returns once it printed its address.
async fn serve(service: &str, name_server: &str, database: &str, http_addr: &str) -> Service {
    serve_with(service, name_server, database, http_addr, &[]).await
}

/// [`serve`] with more environment variables.
pub(crate) async fn serve_with(
    service: &str,
    name_server: &str,
    database: &str,
    http_addr: &str,
    env: &[(&str, &str)],
) -> Service {
    let config = fixtures().join("config").join(format!("{service}-service.yml"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["serve", service, "--http-addr", http_addr, "--database", database])
        .arg("--config")
        .arg(config)
        .env("ROCKETMQ_NAME_SERVER", name_server)
        .env("ORDERFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ORDERFLOW_LOG", "warn,rocketmq_client_rust=error")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("orderflow serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some(w) if w == service && words.len() == 2 => url = words[1].to_owned(),
                Some("Press") => return,
                _ => {}
            }
        }
        panic!("orderflow serve {service} exited before it was up");
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("serve up within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Service { child, url }
}

async fn get(http: &reqwest::Client, url: String) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_rocketmq_and_postgres_and_a_stock_instance_killed_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("rocketmq")).await.unwrap();
    let ns = cluster.name_server();
    let mut dbs = HashMap::new();
    for svc in ["order", "stock", "payment"] {
        dbs.insert(svc, TempDatabase::create(svc).await);
    }
    let order = serve("order", &ns, &dbs["order"].url, "127.0.0.1:0").await;
    let mut stock_a = serve("stock", &ns, &dbs["stock"].url, "127.0.0.1:0").await;
    let stock_b = serve("stock", &ns, &dbs["stock"].url, "127.0.0.1:0").await;
    let payment = serve("payment", &ns, &dbs["payment"].url, "127.0.0.1:0").await;
    let http = admin_client();

    let create = |items: Value| {
        let req = http
            .post(format!("{}/api/orders", order.url))
            .json(&json!({"userId": 1, "items": items}));
        async move {
            req.send().await.unwrap().json::<Value>().await.unwrap()["orderNo"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let terminal = |no: String| {
        let (http, base) = (http.clone(), order.url.clone());
        async move {
            eventually(&format!("{no} terminal"), || async {
                let o = get(&http, format!("{base}/api/orders/{no}")).await?;
                let done = o["status"] == "PAID"
                    || (o["status"] == "CANCELLED"
                        && (o["paymentId"].is_null() || o["refunded"] == true));
                done.then_some(o)
            })
            .await
        }
    };

    // Flows 1 + 2, and 3, across processes.
    let paid = terminal(create(json!([{"productId": 1001, "quantity": 2}])).await).await;
    assert_eq!(paid["status"], "PAID");
    let cancelled = terminal(create(json!([{"productId": 1004, "quantity": 9}])).await).await;
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["cancelReason"].as_str().unwrap().contains("1004"));

    // The races, across processes: hold stock's order-created consumer (on both instances)
    // so payment-success reaches stock first.
    let hold = |state: &'static str| {
        let (http, urls) = (http.clone(), [stock_a.url.clone(), stock_b.url.clone()]);
        async move {
            for base in urls {
                let r = http
                    .put(format!("{base}/admin/bindings/orderCreatedConsumer-in-0"))
                    .json(&json!({"state": state}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    let reservation = |no: String| {
        let (http, base) = (http.clone(), stock_b.url.clone());
        async move { get(&http, format!("{base}/api/stock/reservations/{no}")).await }
    };
    hold("PAUSED").await;
    let early = create(json!([{"productId": 1003, "quantity": 1}])).await;
    eventually("stock saw the payment first", || async {
        reservation(early.clone()).await.filter(|r| r["state"] == "AWAITING_FREEZE")
    })
    .await;
    let doomed = create(json!([{"productId": 1004, "quantity": 50}])).await;
    eventually("payment captured for an order stock cannot fill", || async {
        let o = get(&http, format!("{}/api/orders/{doomed}", order.url)).await?;
        o["paymentId"].is_number().then_some(())
    })
    .await;
    hold("RUNNING").await;
    assert_eq!(terminal(early.clone()).await["status"], "PAID", "payment first, still paid");
    assert_eq!(reservation(early).await.unwrap()["state"], "DEDUCTED");
    let refunded = terminal(doomed.clone()).await;
    assert_eq!(refunded["status"], "CANCELLED");
    assert_eq!(refunded["refunded"], true, "the captured payment was refunded");
    let p: Vec<Value> = get(&http, format!("{}/api/payments?orderNo={doomed}", payment.url))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(p[0]["status"], "REFUNDED");

    // Load, with one of the two stock instances killed in the middle.
    let mut orders = Vec::new();
    for i in 0..40 {
        orders.push(create(json!([{"productId": 1002, "quantity": 1}])).await);
        if i == 15 {
            stock_a.child.start_kill().unwrap();
            stock_a.child.wait().await.unwrap();
        }
    }
    let mut paid = 0;
    for no in orders {
        paid += usize::from(terminal(no).await["status"] == "PAID");
    }
    assert_eq!(paid, 40, "500 cables on offer: every order is paid");
    let cables = eventually("cable stock settled", || async {
        let s = get(&http, format!("{}/api/stock/1002", stock_b.url)).await?;
        (s["frozen"] == 0 && s["sold"] == 40).then_some(s)
    })
    .await;
    assert_eq!(cables["available"], 460, "500 = 460 available + 40 sold: conserved");
    let keyboards = get(&http, format!("{}/api/stock/1001", stock_b.url)).await.unwrap();
    assert_eq!((keyboards["available"].as_i64(), keyboards["sold"].as_i64()), (Some(98), Some(2)));
    let payments: Vec<Value> = get(&http, format!("{}/api/payments", payment.url))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        payments.iter().filter(|p| p["status"] == "SUCCESS").count(),
        42,
        "one payment per paid order"
    );

    for mut s in [order, stock_b, payment] {
        let _ = s.child.start_kill();
        let _ = s.child.wait().await;
    }
    cluster.stop().await;
    for (_, db) in dbs {
        db.drop_now().await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_and_the_broker_sigkilled_during_load_then_restarted_nothing_lost_or_doubled()
{
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(&dir.path().join("rocketmq")).await.unwrap();
    let ns = cluster.name_server();
    let db = |svc: &str| dir.path().join(format!("{svc}.db")).display().to_string();
    let addr: HashMap<&str, String> = ["order", "stock", "payment"]
        .into_iter()
        .map(|s| (s, format!("127.0.0.1:{}", free_port())))
        .collect();
    let start = |svc: &'static str| {
        let (ns, database, addr) = (ns.clone(), db(svc), addr[svc].clone());
        async move { serve(svc, &ns, &database, &addr).await }
    };
    let mut running: HashMap<&str, Service> = HashMap::new();
    for svc in ["order", "stock", "payment"] {
        running.insert(svc, start(svc).await);
    }
    let http = admin_client();
    let order_url = running["order"].url.clone();
    let create = || {
        let req = http
            .post(format!("{order_url}/api/orders"))
            .json(&json!({"userId": 2, "items": [{"productId": 1002, "quantity": 1}]}));
        async move {
            let r = req.send().await.expect("the order service answers");
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["orderNo"].as_str().unwrap().to_owned()
        }
    };

    let mut orders = Vec::new();
    for victim in ["order", "payment", "stock", "broker"] {
        for _ in 0..8 {
            orders.push(create().await);
        }
        if victim == "broker" {
            cluster.kill_broker().await;
        } else {
            let mut s = running.remove(victim).unwrap();
            s.child.start_kill().unwrap();
            s.child.wait().await.unwrap();
        }
        // Orders keep coming while the victim is down (the order service needs itself).
        if victim != "order" {
            for _ in 0..4 {
                orders.push(create().await);
            }
        }
        if victim == "broker" {
            cluster.start_broker().await.expect("broker restarts on its store");
        } else {
            running.insert(victim, start(victim).await);
        }
    }

    let mut paid = 0;
    for no in &orders {
        let o = eventually_within(&format!("{no} terminal"), Duration::from_secs(180), || async {
            let o = get(&http, format!("{order_url}/api/orders/{no}")).await?;
            (o["status"] != "PENDING").then_some(o)
        })
        .await;
        paid += usize::from(o["status"] == "PAID");
    }
    assert_eq!(paid, orders.len(), "every order paid despite the kills");
    let stock_url = running["stock"].url.clone();
    let cables = eventually_within("cable stock settled", Duration::from_secs(60), || async {
        let s = get(&http, format!("{stock_url}/api/stock/1002")).await?;
        (s["frozen"] == 0 && s["sold"] == orders.len()).then_some(s)
    })
    .await;
    assert_eq!(
        cables["available"].as_u64(),
        Some(500 - orders.len() as u64),
        "conserved, each order deducted once"
    );
    let payments: Vec<Value> = get(&http, format!("{}/api/payments", running["payment"].url))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(payments.len(), orders.len(), "one payment per order, no double charge");
    assert!(payments.iter().all(|p| p["status"] == "SUCCESS"));

    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "check",
            "--order-db",
            &db("order"),
            "--stock-db",
            &db("stock"),
            "--payment-db",
            &db("payment"),
        ])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains(": 0 violations"), "{report}");

    for (_, mut s) in running {
        let _ = s.child.start_kill();
        let _ = s.child.wait().await;
    }
    cluster.stop().await;
}
