//! Continuous traffic through a FoodApp's gateway while something changes
//! underneath (a restore, an upgrade, a rollout): readers of the menu and
//! customers placing orders, each on a keep-alive HTTP/1.1 connection
//! through a port-forward to a gateway pod, every request recorded. What is
//! reported is availability: failed requests and the longest time without
//! a successful read or write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Sample {
    pub write: bool,
    pub started: Instant,
    pub done: Instant,
    /// 0: the connection to the gateway failed.
    pub status: u16,
    pub code: String,
    /// The order a 201 acknowledged.
    pub order: Option<String>,
}

pub struct Traffic {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

/// What one kind of request saw over a window.
#[derive(Debug, Default)]
pub struct Seen {
    pub total: usize,
    pub ok: usize,
    /// By status (and problem code): what failed.
    pub failed: std::collections::BTreeMap<String, usize>,
    /// The longest time between two successes (or from the window's start
    /// to the first, or from the last to its end), and when it began (from
    /// the window's start).
    pub longest_gap: Duration,
    pub gap_from: Duration,
    /// When each failure was seen (from the window's start), seconds.
    pub failed_at: Vec<f64>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} ok, failed {:?} (at {:.1?} s), longest gap {:.2}s from +{:.1}s",
            self.total,
            self.ok,
            self.failed,
            self.failed_at,
            self.longest_gap.as_secs_f64(),
            self.gap_from.as_secs_f64()
        )
    }
}

pub struct Report {
    pub samples: Vec<Sample>,
}

impl Report {
    /// Reads or writes within `from..to`.
    pub fn seen(&self, write: bool, from: Instant, to: Instant) -> Seen {
        let mut s: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|x| x.write == write && x.started >= from && x.started <= to)
            .collect();
        s.sort_by_key(|x| x.done);
        let ok = |x: &Sample| {
            if write {
                x.status == 201
            } else {
                x.status == 200
            }
        };
        let mut seen = Seen {
            total: s.len(),
            ..Default::default()
        };
        let mut last = from;
        let gap = |seen: &mut Seen, last: Instant, now: Instant| {
            let g = now.saturating_duration_since(last);
            if g > seen.longest_gap {
                seen.longest_gap = g;
                seen.gap_from = last.saturating_duration_since(from);
            }
        };
        for x in &s {
            if ok(x) {
                seen.ok += 1;
                gap(&mut seen, last, x.done);
                last = x.done;
            } else {
                *seen
                    .failed
                    .entry(format!("{} {}", x.status, x.code))
                    .or_default() += 1;
                seen.failed_at
                    .push(x.done.saturating_duration_since(from).as_secs_f64());
            }
        }
        gap(&mut seen, last, to);
        seen
    }

    /// Orders the shop acknowledged (201), with when.
    pub fn acknowledged(&self) -> Vec<(String, Instant)> {
        self.samples
            .iter()
            .filter_map(|s| Some((s.order.clone()?, s.done)))
            .collect()
    }
}

/// What the customers order.
#[derive(Clone)]
pub struct Shop {
    pub pods: Api<Pod>,
    pub app: String,
    pub customer_token: String,
    pub item: String,
    /// Through the gateway's Service (its cluster address, which the node
    /// this test runs on reaches through kube-proxy) rather than a
    /// port-forward to one gateway pod: what a load balancer sees while
    /// the gateway pods themselves roll.
    pub service: Option<std::net::SocketAddr>,
}

/// A menu item, a customer and their token on FoodApp `app`, through its
/// gateway: what the traffic orders.
pub async fn open_shop(c: &super::Cluster, app: &str, email: &str) -> Shop {
    let admin = c
        .eventually(
            &format!("{app}'s admin logs in"),
            Duration::from_secs(120),
            || c.admin_token(app),
        )
        .await;
    let (status, category, _) = c
        .gateway(
            app,
            "POST",
            "/api/v1/categories",
            Some(json!({"name": "Grill"})),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{category}");
    let (status, item, _) = c
        .gateway(
            app,
            "POST",
            "/api/v1/menu-items",
            Some(json!({"category_id": category["id"], "name": "Burger", "price_cents": 900})),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let login = json!({"email": email, "password": "correct horse battery"});
    let mut register = login.clone();
    register["name"] = json!("Gus");
    let (status, body, _) = c
        .gateway(app, "POST", "/api/v1/auth/register", Some(register), None)
        .await;
    assert!(status == 201 || status == 200, "register: {status} {body}");
    let (status, body, _) = c
        .gateway(app, "POST", "/api/v1/auth/token", Some(login), None)
        .await;
    assert_eq!(status, 200, "{body}");
    Shop {
        pods: c.api::<Pod>(),
        app: app.to_owned(),
        customer_token: body["access_token"].as_str().unwrap().to_owned(),
        item: item["id"].as_str().unwrap().to_owned(),
        service: None,
    }
}

/// `open_shop`, its traffic sent through the gateway's Service address.
pub async fn open_shop_behind_service(c: &super::Cluster, app: &str, email: &str) -> Shop {
    let mut shop = open_shop(c, app, email).await;
    let svc = c
        .api::<k8s_openapi::api::core::v1::Service>()
        .get(&format!("{app}-gateway"))
        .await
        .unwrap();
    let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap();
    shop.service = Some(format!("{ip}:80").parse().unwrap());
    shop
}

impl Traffic {
    pub fn start(shop: Shop, readers: usize, writers: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..readers + writers {
            let write = i >= readers;
            let shop = shop.clone();
            let stop = stop.clone();
            workers.push(tokio::spawn(
                async move { worker(shop, write, i, stop).await },
            ));
        }
        Traffic { stop, workers }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut samples = Vec::new();
        for w in self.workers {
            samples.extend(w.await.unwrap_or_default());
        }
        Report { samples }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive connection to the shop's gateway: its Service, or a ready
/// gateway pod.
async fn connect(shop: &Shop) -> Result<Sender, String> {
    if let Some(addr) = shop.service {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        return Ok(sender);
    }
    let pods = shop
        .pods
        .list(&kube::api::ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=gateway",
            shop.app
        )))
        .await
        .map_err(|e| e.to_string())?;
    let pod = pods
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .ok_or("no ready gateway pod")?;
    let name = pod.metadata.name.unwrap_or_default();
    let mut pf = shop
        .pods
        .portforward(&name, &[8080])
        .await
        .map_err(|e| e.to_string())?;
    let stream = pf.take_stream(8080).ok_or("no stream")?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
        drop(pf);
    });
    Ok(sender)
}

async fn worker(shop: Shop, write: bool, index: usize, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(&shop).await.ok();
        }
        let Some(s) = sender.as_mut() else {
            samples.push(Sample {
                write,
                started,
                done: Instant::now(),
                status: 0,
                code: "connect".into(),
                order: None,
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let builder = hyper::Request::builder().header("host", format!("{}-gateway", shop.app));
        let request = if write {
            let body = json!({"items": [{"menu_item_id": shop.item, "quantity": 1}],
                "payment": {"method": "card", "token": "tok_visa"}});
            builder
                .method("POST")
                .uri("/api/v1/orders")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", shop.customer_token))
                .header(
                    "idempotency-key",
                    format!("e2e-traffic-{index}-{n}-{}", std::process::id()),
                )
                .body(Full::new(Bytes::from(body.to_string())))
        } else {
            builder
                .method("GET")
                .uri("/api/v1/menu-items")
                .body(Full::new(Bytes::new()))
        }
        .expect("a request");
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let response = s.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            ))
        })
        .await;
        let (status, body) = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                sender = None;
                (0, json!({"code": format!("transport: {e}")}))
            }
            Err(_) => {
                sender = None;
                (0, json!({"code": "timeout"}))
            }
        };
        let order = (status == 201).then(|| body["id"].as_str().unwrap_or_default().to_owned());
        samples.push(Sample {
            write,
            started,
            done: Instant::now(),
            status,
            code: body["code"].as_str().unwrap_or_default().to_owned(),
            order,
        });
        // A client backs off on a refusal; the pause is measured finely.
        let pause = if status == 200 || status == 201 {
            50
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    samples
}
