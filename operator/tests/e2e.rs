//! The operator on a real Kubernetes cluster (`make e2e`): the CRDs and the
//! Helm chart are installed, the operator runs in the cluster with the
//! chart's own RBAC, and both example FoodApps are driven through what a
//! platform team does with them. Skipped, saying so, unless
//! FOODAPP_E2E_KUBECONFIG names a kubeconfig.
//!
//! Settings (environment):
//! - FOODAPP_E2E_KUBECONFIG: the cluster (required).
//! - FOODAPP_E2E_OPERATOR_IMAGE, FOODAPP_E2E_API_IMAGE, FOODAPP_E2E_POSTGRES_IMAGE,
//!   FOODAPP_E2E_NGINX_IMAGE: images, with their registry (defaults: the
//!   chart's and the CRD's defaults).
//! - FOODAPP_E2E_PULL_POLICY: the operator's imagePullPolicy (IfNotPresent).
//! - FOODAPP_E2E_STORAGE_CLASS: storage class of the full example (default:
//!   the cluster's default class).
//! - FOODAPP_E2E_IDLE_SECONDS: how long the idle check watches (default 120).
//! - FOODAPP_E2E_NAMESPACE (foodapp-e2e), FOODAPP_E2E_SYSTEM_NAMESPACE
//!   (foodapp-system): where the FoodApps and the operator go.
//! - FOODAPP_E2E_KEEP=1: leave everything installed afterwards.
//! - FOODAPP_E2E_S3_ENDPOINT, FOODAPP_E2E_S3_BUCKET (existing),
//!   FOODAPP_E2E_S3_ACCESS_KEY, FOODAPP_E2E_S3_SECRET_KEY, FOODAPP_E2E_S3_REGION:
//!   an S3 store the cluster's pods reach; with them, backups and restores
//!   are checked too (scheduled, on demand, restore by latest, backupRef and
//!   objectKey, a restore deleted mid-way).

#[path = "e2e/cloudnativepg.rs"]
mod cloudnativepg;
mod common;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/operator_upgrade.rs"]
mod operator_upgrade;
#[path = "e2e/restore.rs"]
mod restore;
#[path = "e2e/rollout.rs"]
mod rollout;
#[path = "e2e/traffic.rs"]
mod traffic;
#[path = "e2e/upgrade.rs"]
mod upgrade;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use foodapp_operator::crd::{FoodApp, FoodAppSpec};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde_json::{Value, json};

const MANAGER: &str = "foodapp-e2e";
/// A PROXY protocol header from an address bistro does not trust names no
/// client: nginx keeps the connection's own address (rate limits hold).
async fn untrusted_proxy_headers(c: &Cluster) {
    let before = c.gateway_pod("bistro").await.unwrap().name_any();
    c.merge(
        "bistro",
        json!({"spec": {"gateway": {"trustedProxies": ["10.110.0.0/20"]}}}),
    )
    .await
    .unwrap();
    c.eventually(
        "bistro's gateway rolls onto the new trusted proxies",
        Duration::from_secs(180),
        || async {
            let pods = c
                .api::<Pod>()
                .list(&ListParams::default().labels(
                    "app.kubernetes.io/instance=bistro,app.kubernetes.io/component=gateway",
                ))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let old_left = pods.iter().any(|p| p.name_any() == before);
            let ready = pods.iter().any(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (!old_left && ready)
                .then_some(())
                .ok_or(format!("{} pods, old one left: {old_left}", pods.len()))
        },
    )
    .await;
    // A path of its own, to find its line in the access log (the API
    // answers 404; any answer will do).
    let path = "/api/v1/forged-proxy-check";
    c.eventually(
        "bistro answers a forged header",
        Duration::from_secs(60),
        || async {
            let raw = c
                .exchange(
                    "bistro",
                    format!("GET {path} HTTP/1.1\r\nHost: {TLS_HOST}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                    false,
                )
                .await?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            text.starts_with("HTTP/1.1 ")
                .then_some(())
                .ok_or(text.lines().next().unwrap_or_default().to_owned())
        },
    )
    .await;
    let pod = c.gateway_pod("bistro").await.unwrap();
    let logs = c
        .api::<Pod>()
        .logs(&pod.name_any(), &Default::default())
        .await
        .unwrap_or_default();
    let line = logs
        .lines()
        .find(|l| l.contains("forged-proxy-check"))
        .expect("the request is logged");
    assert!(
        !line.contains(PROXY_CLIENT) && line.contains("\"remote_addr\":\"127.0.0.1\""),
        "an untrusted PROXY header named the client: {line}"
    );
    c.log("ok: a PROXY header from an untrusted address is not believed: nginx logs the connection's own address");
}

/// The client address the test's PROXY protocol header names.
const PROXY_CLIENT: &str = "203.0.113.7";
/// The name the full example's certificate is made for.
const TLS_HOST: &str = "bistro.example";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

struct Cluster {
    client: Client,
    ns: String,
    system_ns: String,
    started: Instant,
}

impl Cluster {
    fn log(&self, what: &str) {
        println!(
            "[e2e {:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Polls `f` every two seconds until it yields a value, or fails after
    /// `timeout` with `what` and the last state `f` described.
    async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        loop {
            match f().await {
                Ok(v) => {
                    self.log(&format!(
                        "ok: {what} ({:.0}s)",
                        start.elapsed().as_secs_f64()
                    ));
                    return v;
                }
                Err(state) if start.elapsed() > timeout => {
                    self.diagnose().await;
                    panic!("timed out after {timeout:?}: {what}; last seen: {state}");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }

    /// What a person would look at when a step times out.
    async fn diagnose(&self) {
        for app in self
            .api::<FoodApp>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            println!(
                "--- FoodApp {}: {}",
                app.name_any(),
                serde_json::to_string_pretty(&app.status).unwrap_or_default()
            );
        }
        for pod in self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
        {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let states: Vec<String> = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    format!(
                        "{} ready={} restarts={} {:?}",
                        c.name, c.ready, c.restart_count, c.state
                    )
                })
                .collect();
            println!("--- Pod {} {phase} {states:?}", pod.name_any());
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        for e in events
            .list(&ListParams::default())
            .await
            .into_iter()
            .flat_map(|l| l.items)
            .rev()
            .take(30)
        {
            println!(
                "--- Event {} {} {}: {}",
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.note.unwrap_or_default()
            );
        }
    }

    /// Server-side apply of any object, as `kubectl apply --server-side`.
    async fn apply_value(&self, discovery: &Discovery, obj: &Value, default_ns: &str) {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap().to_owned(),
            ),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap());
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the cluster does not serve {gvk:?}"));
        let name = obj["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or(default_ns);
            Api::namespaced_with(self.client.clone(), ns, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
    }

    async fn ensure_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        // A test before this one may have removed it: what is applied into
        // a Terminating namespace goes with it.
        self.eventually(
            &format!("namespace {name} is not terminating"),
            Duration::from_secs(300),
            || async {
                match api.get_opt(name).await.map_err(|e| e.to_string())? {
                    Some(n) if n.metadata.deletion_timestamp.is_some() => {
                        Err("terminating".to_owned())
                    }
                    _ => Ok(()),
                }
            },
        )
        .await;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    }

    /// A request to the gateway of FoodApp `app`, through a port-forward to
    /// one of its pods (works from anywhere the kubeconfig works; the API
    /// server's service proxy would strip the Authorization header).
    async fn gateway(
        &self,
        app: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value, Vec<(String, String)>) {
        self.gateway_with(app, method, path, body, token, &[]).await
    }

    /// A ready gateway pod of `app`.
    async fn gateway_pod(&self, app: &str) -> Result<Pod, String> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={app},app.kubernetes.io/component=gateway"
        ));
        let pods = self
            .api::<Pod>()
            .list(&lp)
            .await
            .map_err(|e| e.to_string())?
            .items;
        pods.into_iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .ok_or_else(|| "no ready gateway pod".to_owned())
    }

    /// The raw exchange with a gateway pod, as a client behind the FoodApp's
    /// load balancer makes it: with a PROXY protocol header when the spec
    /// turns it on (client 203.0.113.7), over TLS (HTTP/1.1 by ALPN) when the
    /// gateway serves it and redirects plain HTTP; `plain` forces port 8080.
    async fn exchange(&self, app: &str, request: &[u8], plain: bool) -> Result<Vec<u8>, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let spec = self
            .api::<FoodApp>()
            .get(app)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .gateway;
        let tls = spec.tls.as_ref().filter(|t| t.redirect_http && !plain);
        let port = if tls.is_some() { 8443 } else { 8080 };
        let pod = self.gateway_pod(app).await?;
        let mut pf = self
            .api::<Pod>()
            .portforward(&pod.name_any(), &[port])
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = pf.take_stream(port).ok_or("no stream")?;
        let mut raw = Vec::new();
        let io = async {
            if spec.proxy_protocol {
                stream
                    .write_all(
                        format!("PROXY TCP4 {PROXY_CLIENT} 10.244.0.9 40000 {port}\r\n").as_bytes(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            match tls {
                Some(t) => {
                    let secret = t.secret_name.clone().unwrap_or_default();
                    let mut tls = self.tls_connect(&secret, stream, b"http/1.1").await?;
                    tls.write_all(request).await.map_err(|e| e.to_string())?;
                    tls.read_to_end(&mut raw).await.map_err(|e| e.to_string())
                }
                None => {
                    stream.write_all(request).await.map_err(|e| e.to_string())?;
                    stream
                        .read_to_end(&mut raw)
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(30), io).await;
        pf.abort();
        match result {
            Ok(Ok(_)) => Ok(raw),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".into()),
        }
    }

    /// A TLS client trusting only the certificate in Secret `secret`, for
    /// the name it was made for, offering `alpn`.
    async fn tls_connect<S>(
        &self,
        secret: &str,
        stream: S,
        alpn: &[u8],
    ) -> Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use rustls::pki_types::pem::PemObject;
        let pem = self
            .secret_value(secret, "tls.crt")
            .await
            .ok_or("no tls.crt")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = rustls::pki_types::ServerName::try_from(TLS_HOST).map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())
    }

    async fn gateway_with(
        &self,
        app: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, Vec<(String, String)>) {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {app}-gateway\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = token {
            request.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&body);
        match self.exchange(app, &bytes, false).await {
            Ok(raw) => parse_response(&raw),
            Err(e) => (0, json!({"error": e}), Vec::new()),
        }
    }

    /// A JSON merge patch of FoodApp `app` (a poke, or a spec change).
    /// Unless `FOODAPP_E2E_KEEP=1`: FoodApp `app` deleted with its data, and
    /// the test's namespace.
    async fn remove_app_and_namespace(&self, app: &str) {
        if setting("FOODAPP_E2E_KEEP", "0") == "1" {
            return;
        }
        let _ = self
            .merge(app, json!({"spec": {"deletionPolicy": "Delete"}}))
            .await;
        let _ = self
            .api::<FoodApp>()
            .delete(app, &DeleteParams::default())
            .await;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
    }

    async fn merge(&self, app: &str, patch: Value) -> Result<FoodApp, kube::Error> {
        self.api::<FoodApp>()
            .patch(app, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    /// Waits until Deployment `name` wants and has `n` replicas.
    async fn replicas_reach(&self, what: &str, name: &str, n: i32) {
        self.eventually(what, Duration::from_secs(180), || async {
            match replicas(self, name).await? {
                (w, a, _) if w == n && a == n => Ok(()),
                other => Err(format!("wanted, available, generation: {other:?}")),
            }
        })
        .await;
    }

    async fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let s = self.api::<Secret>().get_opt(name).await.ok()??;
        String::from_utf8(s.data?.get(key)?.0.clone()).ok()
    }

    /// Logs in as the first administrator named by FoodApp `app`'s status.
    async fn admin_token(&self, app: &str) -> Result<String, String> {
        let fa = self
            .api::<FoodApp>()
            .get(app)
            .await
            .map_err(|e| e.to_string())?;
        let secret = fa
            .status
            .and_then(|s| s.admin_secret)
            .ok_or("no status.adminSecret yet")?;
        let email = self
            .secret_value(&secret, "email")
            .await
            .ok_or("no email")?;
        let password = self
            .secret_value(&secret, "password")
            .await
            .ok_or("no password")?;
        let (status, body, _) = self
            .gateway(
                app,
                "POST",
                "/api/v1/auth/token",
                Some(json!({"email": email, "password": password})),
                None,
            )
            .await;
        match (status, body["access_token"].as_str()) {
            (200, Some(t)) => Ok(t.to_owned()),
            _ => Err(format!("login: {status} {body}")),
        }
    }

    async fn ready(&self, app: &str) -> Result<(), String> {
        let fa = self
            .api::<FoodApp>()
            .get(app)
            .await
            .map_err(|e| e.to_string())?;
        let status = fa.status.ok_or("no status")?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c)
                if c.status == "True" && status.observed_generation == fa.metadata.generation =>
            {
                Ok(())
            }
            _ => Err(format!(
                "phase {:?}, Ready {:?}",
                status.phase,
                ready.map(|c| &c.message)
            )),
        }
    }

    /// resourceVersion of every object the operator made for `app`.
    async fn children_versions(&self, app: &str) -> BTreeMap<String, String> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={app},app.kubernetes.io/managed-by=foodapp-operator"
        ));
        let mut out = BTreeMap::new();
        macro_rules! collect {
            ($($k:ty),*) => {$(
                for o in self.api::<$k>().list(&lp).await.unwrap().items {
                    out.insert(format!("{} {}", <$k>::kind(&()), o.name_any()), o.resource_version().unwrap_or_default());
                }
            )*};
        }
        collect!(
            StatefulSet,
            Deployment,
            Service,
            ConfigMap,
            Secret,
            CronJob,
            k8s_openapi::api::batch::v1::Job,
            HorizontalPodAutoscaler,
            PodDisruptionBudget,
            NetworkPolicy
        );
        out
    }
}

/// Status, JSON body and headers of a raw HTTP/1.1 response (read to EOF,
/// `Connection: close`; chunked bodies are reassembled).
fn parse_response(raw: &[u8]) -> (u16, Value, Vec<(String, String)>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 || rest.len() < eol + 2 + size {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[(eol + 4 + size).min(rest.len())..];
        }
        body = out;
    }
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)}));
    (status, value, headers)
}

async fn connect() -> Option<Client> {
    let path = std::env::var("FOODAPP_E2E_KUBECONFIG")
        .ok()
        .filter(|p| !p.is_empty())?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Some(Client::try_from(config).unwrap())
}

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The chart's objects of the checkout at `root` (this one, or another
/// release's), rendered by Helm's engine (charts/render.py).
fn render_chart_of(root: &std::path::Path, system_ns: &str, values: &Value) -> Vec<Value> {
    let tools = std::env::var("FOODAPP_TOOLS")
        .unwrap_or_else(|_| format!("{}/.cache/foodapp/tools", std::env::var("HOME").unwrap()));
    let python = format!("{tools}/venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg(root.join("charts/render.py"))
        .args(["--namespace", system_ns, "--values", &values.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run `scripts/test-services install`)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// An example FoodApp, pointed at this run's images and storage.
fn example(file: &str, ns: &str) -> FoodApp {
    let text = std::fs::read_to_string(repo().join("examples").join(file)).unwrap();
    let mut app: FoodApp = yaml_serde::from_str(&text).unwrap();
    app.metadata.namespace = Some(ns.to_owned());
    let spec: &mut FoodAppSpec = &mut app.spec;
    spec.api.image = setting(
        "FOODAPP_E2E_API_IMAGE",
        foodapp_operator::crd::DEFAULT_API_IMAGE,
    );
    spec.database.image = setting("FOODAPP_E2E_POSTGRES_IMAGE", "postgres:16");
    spec.gateway.image = setting("FOODAPP_E2E_NGINX_IMAGE", "nginx:1.27");
    spec.database.storage.storage_class_name = std::env::var("FOODAPP_E2E_STORAGE_CLASS")
        .ok()
        .filter(|s| !s.is_empty());
    app
}

async fn apply_foodapp(c: &Cluster, app: &FoodApp) {
    let mut value = serde_json::to_value(app).unwrap();
    value.as_object_mut().unwrap().remove("status");
    c.api::<FoodApp>()
        .patch(
            &app.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .unwrap();
}

/// The CRDs and the chart, as `helm install` would, and the operator
/// running with a leader; FoodApps go to namespace `ns`. None: no cluster.
async fn install(ns: &str) -> Option<(Cluster, Discovery, Client, String)> {
    let image = setting(
        "FOODAPP_E2E_OPERATOR_IMAGE",
        foodapp_operator::crd::DEFAULT_OPERATOR_IMAGE,
    );
    install_from(ns, &repo(), &image).await
}

/// `install` of the CRDs and chart of the checkout at `root`, with
/// `operator_image`: the same as `helm upgrade` when a release is there.
async fn install_from(
    ns: &str,
    root: &std::path::Path,
    operator_image: &str,
) -> Option<(Cluster, Discovery, Client, String)> {
    let Some(client) = connect().await else {
        println!(
            "SKIPPED: FOODAPP_E2E_KUBECONFIG is not set; `make e2e` needs a cluster (README: End-to-end tests)"
        );
        return None;
    };
    let c = Cluster {
        client: client.clone(),
        ns: ns.to_owned(),
        system_ns: setting("FOODAPP_E2E_SYSTEM_NAMESPACE", "foodapp-system"),
        started: Instant::now(),
    };
    let minute = Duration::from_secs(60);
    let discovery = Discovery::new(client.clone()).run().await.unwrap();

    // 1. CRDs, then the chart, as `helm install` would.
    c.log("installing the CRDs");
    for file in std::fs::read_dir(root.join("crds")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let crd: CustomResourceDefinition =
            yaml_serde::from_str(text.trim_start_matches("---\n")).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    c.eventually("the CRDs are established", minute, || async {
        for name in [
            "foodapps.foodapp.io",
            "foodappbackups.foodapp.io",
            "foodapprestores.foodapp.io",
        ] {
            let crd = crds.get(name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if !established {
                return Err(format!("{name} not established"));
            }
        }
        Ok(())
    })
    .await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .unwrap_or(discovery);

    let (repository, tag) = split_image(operator_image);
    let values = json!({"image": {"repository": repository, "tag": tag,
        "pullPolicy": setting("FOODAPP_E2E_PULL_POLICY", "IfNotPresent")}});
    c.log(&format!(
        "installing the chart into {} with {operator_image}",
        c.system_ns
    ));
    c.ensure_namespace(&c.system_ns).await;
    for obj in render_chart_of(root, &c.system_ns, &values) {
        c.apply_value(&discovery, &obj, &c.system_ns).await;
    }
    let system_deployments: Api<Deployment> = Api::namespaced(client.clone(), &c.system_ns);
    c.eventually(
        "the operator's two replicas are available",
        3 * minute,
        || async {
            let d = system_deployments
                .get("foodapp-foodapp-operator")
                .await
                .map_err(|e| e.to_string())?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            if available >= 2 {
                Ok(())
            } else {
                Err(format!("{available} available"))
            }
        },
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &c.system_ns);
    let leader = c
        .eventually("a replica holds the lease", minute, || async {
            let l = leases
                .get_opt("foodapp-operator-leader")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no lease")?;
            l.spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| "no holder".to_owned())
        })
        .await;
    c.log(&format!("leader: {leader}"));
    Some((c, discovery, client, leader))
}

#[tokio::test]
#[ignore = "needs a cluster: make e2e with FOODAPP_E2E_KUBECONFIG"]
async fn the_operator_on_a_real_cluster() {
    let Some((c, discovery, client, leader)) =
        install(&setting("FOODAPP_E2E_NAMESPACE", "foodapp-e2e")).await
    else {
        return;
    };
    let minute = Duration::from_secs(60);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &c.system_ns);

    // 2. Both examples, side by side in one namespace.
    c.ensure_namespace(&c.ns).await;
    let credentials = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "spaces-credentials", "namespace": c.ns},
        "stringData": {"AWS_ACCESS_KEY_ID": "e2e", "AWS_SECRET_ACCESS_KEY": "e2e-not-used-before-03:00"}});
    c.apply_value(&discovery, &credentials, &c.ns).await;
    // The full example serves TLS from Secret bistro-tls.
    let (crt, key) = self_signed(TLS_HOST);
    let tls = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "bistro-tls", "namespace": c.ns},
        "stringData": {"tls.crt": crt, "tls.key": key}});
    c.apply_value(&discovery, &tls, &c.ns).await;
    let shop = example("foodapp.yaml", &c.ns);
    let mut bistro = example("foodapp-full.yaml", &c.ns);
    // The test's PROXY headers come through port-forwards: from the pod's
    // own loopback, its load balancer here.
    bistro.spec.gateway.trusted_proxies = vec!["127.0.0.1/32".into()];
    apply_foodapp(&c, &shop).await;
    apply_foodapp(&c, &bistro).await;
    for name in ["shop", "bistro"] {
        c.eventually(&format!("FoodApp {name} is Ready"), 5 * minute, || {
            c.ready(name)
        })
        .await;
    }

    // 3. The gateway answers, with one request id. Ready pods reach the
    // Service's endpoints and kube-proxy's rules a moment later: the first
    // answer may be the gateway's own 503 `maintenance`.
    for name in ["shop", "bistro"] {
        let headers = c
            .eventually(
                &format!("{name}'s gateway serves the menu"),
                Duration::from_secs(30),
                || async {
                    match c
                        .gateway(name, "GET", "/api/v1/menu-items", None, None)
                        .await
                    {
                        (200, _, headers) => Ok(headers),
                        (status, body, _) => Err(format!("{status}: {body}")),
                    }
                },
            )
            .await;
        let ids = headers.iter().filter(|(k, _)| k == "x-request-id").count();
        assert_eq!(ids, 1, "{name}: one X-Request-Id: {headers:?}");
    }
    // No pod that never calls the Kubernetes API carries a token to steal.
    let pods = c
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
        .await
        .unwrap()
        .items;
    let mut checked = 0;
    for pod in &pods {
        let labels = pod.labels();
        let component = labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            .unwrap_or_default();
        if !["api", "gateway", "database", "migration"].contains(&component) {
            continue;
        }
        let spec = pod.spec.as_ref().unwrap();
        let mounted = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.mount_path.starts_with("/var/run/secrets/kubernetes.io"));
        assert!(
            !mounted && spec.automount_service_account_token == Some(false),
            "{} ({component}) carries a ServiceAccount token",
            pod.name_any()
        );
        checked += 1;
    }
    assert!(checked >= 4, "{checked} pods checked");
    c.log(&format!(
        "ok: none of shop's {checked} API, gateway, database and migration pods has a ServiceAccount token"
    ));

    // 4. The first administrator logs in and writes data.
    let token = c
        .eventually("the first admin of shop logs in", minute, || {
            c.admin_token("shop")
        })
        .await;
    let (status, body, _) = c
        .gateway(
            "shop",
            "POST",
            "/api/v1/categories",
            Some(json!({"name": format!("E2E soups {}", k8s_openapi::jiff::Timestamp::now().as_millisecond())})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let category = body["id"].as_str().unwrap().to_owned();

    // 5. Idle: passes triggered by changes that touch no child write nothing.
    let before = c.children_versions("shop").await;
    let idle = Duration::from_secs(setting("FOODAPP_E2E_IDLE_SECONDS", "120").parse().unwrap());
    c.log(&format!(
        "idle check: {} children, {idle:?}, with a reconcile poked every 10 s",
        before.len()
    ));
    let start = Instant::now();
    let mut pokes = 0;
    while start.elapsed() < idle {
        pokes += 1;
        c.merge(
            "shop",
            json!({"metadata": {"annotations": {"e2e.foodapp.io/poke": pokes.to_string()}}}),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let after = c.children_versions("shop").await;
    let changed: Vec<&String> = before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "idle passes wrote to {changed:?}");
    c.log(&format!(
        "ok: {pokes} idle passes over {idle:?} wrote to none of {} children",
        before.len()
    ));

    // 6. The leader kept its lease and nobody restarted.
    let lease = leases
        .get("foodapp-operator-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        lease.holder_identity.as_deref(),
        Some(leader.as_str()),
        "the lease changed hands"
    );
    let renewed = lease.renew_time.unwrap().0;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed);
    assert!(age.as_secs() < 15, "the lease was last renewed {age:?} ago");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &c.system_ns);
    for p in pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=foodapp-operator"))
        .await
        .unwrap()
        .items
    {
        let restarts: i32 = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .map(|s| s.restart_count)
            .sum();
        assert_eq!(
            restarts,
            0,
            "operator pod {} restarted",
            p.metadata.name.unwrap_or_default()
        );
    }
    c.log(&format!(
        "ok: {leader} held the lease for {:.0}s, renewed {:.1}s ago, no restarts",
        c.started.elapsed().as_secs_f64(),
        age.as_secs_f64()
    ));

    scaling_and_edge(&c).await;
    external_database(&c, &discovery).await;
    hostile::hostile_tenant(&c, &discovery).await;

    // 7. A field removed from the spec leaves the live object.
    let resources = |d: Deployment| {
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap_or_default()
    };
    c.merge(
        "shop",
        json!({"spec": {"api": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}}}),
    )
    .await
    .unwrap();
    c.eventually("api.resources reaches the Deployment", minute, || async {
        let d = c
            .api::<Deployment>()
            .get("shop-api")
            .await
            .map_err(|e| e.to_string())?;
        if resources(d).requests.is_some() {
            Ok(())
        } else {
            Err("no requests".into())
        }
    })
    .await;
    c.merge("shop", json!({"spec": {"api": {"resources": null}}}))
        .await
        .unwrap();
    c.eventually(
        "api.resources removed from the spec leaves the Deployment",
        minute,
        || async {
            let d = c
                .api::<Deployment>()
                .get("shop-api")
                .await
                .map_err(|e| e.to_string())?;
            let r = resources(d);
            if r.requests.is_none() && r.limits.is_none() {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    c.eventually("shop is Ready again", 3 * minute, || c.ready("shop"))
        .await;

    // 8. Delete under Retain, apply again: same data, same login.
    let password = c.secret_value("shop-db", "password").await.unwrap();
    c.api::<FoodApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually(
        "shop is deleted (the finalizer ran)",
        2 * minute,
        || async {
            match c
                .api::<FoodApp>()
                .get_opt("shop")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        },
    )
    .await;
    c.eventually("shop's pods are gone", 2 * minute, || async {
        let pods = c
            .api::<Pod>()
            .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
            .await
            .map_err(|e| e.to_string())?;
        if pods.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} pods", pods.items.len()))
        }
    })
    .await;
    assert!(
        c.api::<PersistentVolumeClaim>()
            .get_opt("data-shop-db-0")
            .await
            .unwrap()
            .is_some(),
        "Retain keeps the volume"
    );
    assert_eq!(
        c.secret_value("shop-db", "password").await.as_deref(),
        Some(password.as_str()),
        "Retain keeps the login"
    );
    apply_foodapp(&c, &shop).await;
    c.eventually(
        "shop is Ready after being applied again",
        5 * minute,
        || c.ready("shop"),
    )
    .await;
    let token = c
        .eventually("the same admin logs in", minute, || c.admin_token("shop"))
        .await;
    let (status, body, _) = c
        .gateway(
            "shop",
            "GET",
            &format!("/api/v1/categories/{category}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "the data survived: {body}");
    c.log("ok: deleted under Retain and applied again: same data, same login");

    // 9. The database Secret deleted by mistake: a new password, and access.
    c.api::<Secret>()
        .delete("shop-db", &DeleteParams::default())
        .await
        .unwrap();
    let new_password = c
        .eventually("the database Secret is back", minute, || async {
            match c.secret_value("shop-db", "password").await {
                Some(p) if p != password => Ok(p),
                other => Err(format!("{:?}", other.map(|_| "old password"))),
            }
        })
        .await;
    assert_ne!(new_password, password);
    c.eventually(
        "the API pods restarted with the new Secret and shop is Ready",
        5 * minute,
        || async {
            c.ready("shop").await?;
            let d = c
                .api::<Deployment>()
                .get("shop-api")
                .await
                .map_err(|e| e.to_string())?;
            let s = d.status.unwrap_or_default();
            let updated = s.updated_replicas.unwrap_or(0) == s.replicas.unwrap_or(-1)
                && s.observed_generation == d.metadata.generation
                && s.available_replicas.unwrap_or(0) >= 1
                && s.unavailable_replicas.unwrap_or(0) == 0;
            if updated {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    let token = c
        .eventually(
            "the admin logs in after the API restarted",
            2 * minute,
            || c.admin_token("shop"),
        )
        .await;
    let (status, body, _) = c
        .gateway(
            "shop",
            "GET",
            &format!("/api/v1/categories/{category}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    c.log("ok: the database Secret was re-created and the API still reaches its data");

    backups_and_restores(&c, &discovery).await;

    if setting("FOODAPP_E2E_KEEP", "0") != "1" {
        c.log("cleaning up (FOODAPP_E2E_KEEP=1 keeps everything)");
        for app in ["shop", "bistro", "deli", "cafe"] {
            let _ = c
                .merge(app, json!({"spec": {"deletionPolicy": "Delete"}}))
                .await;
            let _ = c
                .api::<FoodApp>()
                .delete(app, &DeleteParams::default())
                .await;
        }
        c.eventually("the FoodApps are gone", 2 * minute, || async {
            let left = c
                .api::<FoodApp>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} left"))
            }
        })
        .await;
        // CloudNativePG's CRDs were installed by this run: remove them.
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in CNPG_KINDS {
            let _ = crds
                .delete(
                    &format!("{name}.postgresql.cnpg.io"),
                    &DeleteParams::default(),
                )
                .await;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let _ = namespaces.delete(&c.ns, &DeleteParams::default()).await;
        let _ = namespaces
            .delete(&c.system_ns, &DeleteParams::default())
            .await;
    }
    c.log("all end-to-end checks passed");
}

async fn category_names(c: &Cluster, app: &str) -> Result<Vec<String>, String> {
    let (status, body, _) = c
        .gateway(app, "GET", "/api/v1/categories?limit=100", None, None)
        .await;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    Ok(body["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn add_category(c: &Cluster, app: &str, name: &str) {
    let token = c
        .eventually(
            &format!("{app}'s admin logs in"),
            Duration::from_secs(120),
            || c.admin_token(app),
        )
        .await;
    let (status, body, _) = c
        .gateway(
            app,
            "POST",
            "/api/v1/categories",
            Some(json!({"name": name})),
            Some(&token),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn backup_done(c: &Cluster, name: &str) -> Result<(String, bool), String> {
    let b = c
        .api::<foodapp_operator::crd::FoodAppBackup>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let s = b.status.ok_or("no status")?;
    match s.phase {
        Some(foodapp_operator::crd::JobPhase::Succeeded) => Ok((
            s.object_key.unwrap_or_default(),
            s.verified.unwrap_or(false),
        )),
        Some(foodapp_operator::crd::JobPhase::Failed) => {
            panic!("backup {name} failed: {:?} {:?}", s.reason, s.error)
        }
        other => Err(format!("{other:?}")),
    }
}

async fn restore_and_wait(c: &Cluster, name: &str, source: Value) {
    let mut spec = source;
    spec["foodAppRef"] = json!("deli");
    let obj = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
        "metadata": {"name": name, "namespace": c.ns}, "spec": spec});
    c.api::<foodapp_operator::crd::FoodAppRestore>()
        .create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
    c.eventually(
        &format!("restore {name} succeeds"),
        Duration::from_secs(600),
        || async {
            let r = c
                .api::<foodapp_operator::crd::FoodAppRestore>()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let s = r.status.ok_or("no status")?;
            match s.phase {
                Some(foodapp_operator::crd::RestorePhase::Succeeded) => Ok(()),
                Some(foodapp_operator::crd::RestorePhase::Failed) => {
                    panic!("restore {name} failed: {:?}", s.error)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    c.eventually(
        "deli is Ready after the restore",
        Duration::from_secs(300),
        || c.ready("deli"),
    )
    .await;
}

/// Scheduled and on-demand backups, restores by latest, backupRef and
/// objectKey, and a restore deleted mid-way, on FoodApp `deli`.
async fn backups_and_restores(c: &Cluster, discovery: &Discovery) {
    let Ok(endpoint) = std::env::var("FOODAPP_E2E_S3_ENDPOINT") else {
        c.log("backup checks SKIPPED: FOODAPP_E2E_S3_ENDPOINT is not set");
        return;
    };
    let minute = Duration::from_secs(60);
    let credentials = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "e2e-s3", "namespace": c.ns},
        "stringData": {"AWS_ACCESS_KEY_ID": setting("FOODAPP_E2E_S3_ACCESS_KEY", ""),
                       "AWS_SECRET_ACCESS_KEY": setting("FOODAPP_E2E_S3_SECRET_KEY", "")}});
    c.apply_value(discovery, &credentials, &c.ns).await;
    let mut deli = example("foodapp.yaml", &c.ns);
    deli.metadata.name = Some("deli".to_owned());
    deli.spec.api.replicas = 1;
    deli.spec.gateway.replicas = 1;
    deli.spec.backup = Some(
        serde_json::from_value(json!({
        "schedule": "*/2 * * * *",
        "retention": {"keepLast": 3},
        "s3": {"endpoint": endpoint, "region": setting("FOODAPP_E2E_S3_REGION", "us-east-1"),
               "bucket": setting("FOODAPP_E2E_S3_BUCKET", "foodapp-e2e"), "prefix": "e2e",
               "forcePathStyle": true, "credentialsSecret": "e2e-s3"}}))
        .unwrap(),
    );
    apply_foodapp(c, &deli).await;
    c.eventually("FoodApp deli (with backups) is Ready", 5 * minute, || {
        c.ready("deli")
    })
    .await;
    add_category(c, "deli", "before backups").await;

    let scheduled = c
        .eventually(
            "a scheduled backup succeeds, verified",
            6 * minute,
            || async {
                let list = c
                    .api::<foodapp_operator::crd::FoodAppBackup>()
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let done = list.items.iter().find(|b| {
                    b.spec.food_app_ref == "deli"
                        && b.spec.source == foodapp_operator::crd::BackupSource::Scheduled
                        && b.status.as_ref().and_then(|s| s.phase)
                            == Some(foodapp_operator::crd::JobPhase::Succeeded)
                });
                match done {
                    Some(b) => Ok((
                        b.name_any(),
                        b.status.as_ref().and_then(|s| s.verified).unwrap_or(false),
                    )),
                    None => Err(format!("{} backups, none succeeded", list.items.len())),
                }
            },
        )
        .await;
    assert!(
        scheduled.1,
        "the scheduled backup {} was verified",
        scheduled.0
    );

    let now = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppBackup",
        "metadata": {"name": "deli-now", "namespace": c.ns}, "spec": {"foodAppRef": "deli"}});
    c.api::<foodapp_operator::crd::FoodAppBackup>()
        .create(&Default::default(), &serde_json::from_value(now).unwrap())
        .await
        .unwrap();
    let (key, verified) = c
        .eventually("an on-demand backup succeeds", 5 * minute, || {
            backup_done(c, "deli-now")
        })
        .await;
    assert!(
        verified,
        "verified in the throwaway server beside the agent"
    );

    add_category(c, "deli", "after backup 1").await;
    restore_and_wait(c, "by-ref", json!({"backupRef": "deli-now"})).await;
    let names = c
        .eventually("deli serves after restore by backupRef", minute, || {
            category_names(c, "deli")
        })
        .await;
    assert!(
        names.contains(&"before backups".to_owned())
            && !names.contains(&"after backup 1".to_owned()),
        "{names:?}"
    );

    add_category(c, "deli", "after backup 2").await;
    restore_and_wait(c, "by-key", json!({"objectKey": key})).await;
    let names = c
        .eventually("deli serves after restore by objectKey", minute, || {
            category_names(c, "deli")
        })
        .await;
    assert!(!names.contains(&"after backup 2".to_owned()), "{names:?}");

    restore_and_wait(c, "by-latest", json!({"latest": true})).await;
    let names = c
        .eventually("deli serves after restore of the latest", minute, || {
            category_names(c, "deli")
        })
        .await;
    assert!(names.contains(&"before backups".to_owned()), "{names:?}");

    // A restore deleted while its Job runs: all or nothing, and the API back.
    add_category(c, "deli", "after backup 3").await;
    let obj = json!({"apiVersion": "foodapp.io/v1alpha1", "kind": "FoodAppRestore",
        "metadata": {"name": "mid-way", "namespace": c.ns}, "spec": {"foodAppRef": "deli", "latest": true}});
    c.api::<foodapp_operator::crd::FoodAppRestore>()
        .create(&Default::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap();
    c.eventually("the mid-way restore's Job pod runs", 5 * minute, || async {
        let pods = c
            .api::<Pod>()
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=mid-way-restore"))
            .await
            .map_err(|e| e.to_string())?;
        if pods.items.is_empty() {
            Err("no pod yet".into())
        } else {
            Ok(())
        }
    })
    .await;
    c.api::<foodapp_operator::crd::FoodAppRestore>()
        .delete("mid-way", &DeleteParams::default())
        .await
        .unwrap();
    c.eventually(
        "deli is Ready again after the restore was deleted",
        5 * minute,
        || c.ready("deli"),
    )
    .await;
    let names = c
        .eventually("deli serves after the deleted restore", 2 * minute, || {
            category_names(c, "deli")
        })
        .await;
    let untouched = names.contains(&"after backup 3".to_owned());
    let restored = !untouched && names.contains(&"before backups".to_owned());
    assert!(
        untouched || restored,
        "neither untouched nor fully restored: {names:?}"
    );
    c.log(&format!(
        "ok: a restore deleted mid-way left the database {}",
        if untouched {
            "untouched"
        } else {
            "fully restored"
        }
    ));
}

/// A self-signed certificate and key (PEM) for `host`.
fn self_signed(host: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("e2e-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    common::self_signed(&dir, host);
    let pair = (
        std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
        std::fs::read_to_string(dir.join("tls.key")).unwrap(),
    );
    std::fs::remove_dir_all(dir).ok();
    pair
}

async fn replicas(c: &Cluster, name: &str) -> Result<(i32, i32, i64), String> {
    let d = c
        .api::<Deployment>()
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1);
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Ok((wanted, available, d.metadata.generation.unwrap_or(0)))
}

/// The full example (bistro): its autoscaler, disruption budgets, network
/// policies, TLS with HTTP/2 and the PROXY protocol, on the real cluster.
async fn scaling_and_edge(c: &Cluster) {
    let minute = Duration::from_secs(60);
    let hpa = c
        .api::<HorizontalPodAutoscaler>()
        .get("bistro-api")
        .await
        .expect("the API's HorizontalPodAutoscaler");
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 10));
    for name in ["shop-api", "shop-gateway", "bistro-api", "bistro-gateway"] {
        c.api::<PodDisruptionBudget>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("PodDisruptionBudget {name}: {e}"));
    }
    for app in ["shop", "bistro"] {
        for part in ["db", "api", "gateway"] {
            c.api::<NetworkPolicy>()
                .get(&format!("{app}-{part}"))
                .await
                .unwrap_or_else(|e| panic!("NetworkPolicy {app}-{part}: {e}"));
        }
    }
    c.log("ok: the HorizontalPodAutoscaler, 4 PodDisruptionBudgets and 6 NetworkPolicies were accepted");

    // The autoscaler, not the operator, sets the API's replicas (no metrics
    // source here: it holds them at minReplicas).
    c.replicas_reach(
        "the autoscaler runs bistro's API at its minimum of 3",
        "bistro-api",
        3,
    )
    .await;
    let d = c.api::<Deployment>().get("bistro-api").await.unwrap();
    let owners: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter(|m| {
            m.fields_v1.as_ref().is_some_and(|f| {
                f.0.get("f:spec")
                    .and_then(|s| s.get("f:replicas"))
                    .is_some()
            })
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !owners.iter().any(|m| m == "foodapp-operator"),
        "the operator still owns spec.replicas: {owners:?}"
    );
    c.merge(
        "bistro",
        json!({"spec": {"api": {"autoscaling": {"minReplicas": 4}}}}),
    )
    .await
    .unwrap();
    c.replicas_reach("the autoscaler takes bistro's API to 4", "bistro-api", 4)
        .await;
    let (_, _, generation) = replicas(c, "bistro-api").await.unwrap();
    for poke in 0..3 {
        c.merge(
            "bistro",
            json!({"metadata": {"annotations": {"e2e.foodapp.io/poke": poke.to_string()}}}),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let (wanted, _, after) = replicas(c, "bistro-api").await.unwrap();
    assert_eq!(
        (wanted, after),
        (4, generation),
        "the operator fought the autoscaler"
    );
    c.log("ok: 3 reconciles over 30 s left the autoscaler's 4 replicas and the Deployment's generation alone");
    c.merge(
        "bistro",
        json!({"spec": {"api": {"autoscaling": null, "replicas": 2}}}),
    )
    .await
    .unwrap();
    c.eventually(
        "without autoscaling, bistro's API is back to 2 and the autoscaler is gone",
        2 * minute,
        || async {
            let gone = c
                .api::<HorizontalPodAutoscaler>()
                .get_opt("bistro-api")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            match (gone, replicas(c, "bistro-api").await?) {
                (true, (2, 2, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // HTTPS with HTTP/2, the client's address from the PROXY protocol,
    // plain HTTP redirected, HSTS.
    let (status, _, headers) = c
        .eventually("bistro answers over HTTPS", minute, || async {
            match c
                .gateway("bistro", "GET", "/api/v1/menu-items", None, None)
                .await
            {
                (200, body, headers) => Ok((200, body, headers)),
                (status, body, _) => Err(format!("{status}: {body}")),
            }
        })
        .await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "strict-transport-security" && v.contains("max-age=31536000")),
        "{headers:?}"
    );
    let alpn = {
        use tokio::io::AsyncWriteExt;
        let pod = c.gateway_pod("bistro").await.unwrap();
        let mut pf = c
            .api::<Pod>()
            .portforward(&pod.name_any(), &[8443])
            .await
            .unwrap();
        let mut stream = pf.take_stream(8443).unwrap();
        stream
            .write_all(format!("PROXY TCP4 {PROXY_CLIENT} 10.244.0.9 40001 443\r\n").as_bytes())
            .await
            .unwrap();
        let tls = c.tls_connect("bistro-tls", stream, b"h2").await.unwrap();
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        drop(tls);
        pf.abort();
        alpn
    };
    assert_eq!(
        alpn.as_deref(),
        Some(&b"h2"[..]),
        "HTTP/2 is offered over TLS"
    );
    let raw = c
        .exchange(
            "bistro",
            format!("POST /api/v1/orders HTTP/1.1\r\nHost: {TLS_HOST}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            true,
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 308"), "{text}");
    assert!(
        text.contains(&format!("Location: https://{TLS_HOST}/api/v1/orders")),
        "{text}"
    );
    let mut seen = false;
    for pod in c
        .api::<Pod>()
        .list(
            &ListParams::default()
                .labels("app.kubernetes.io/instance=bistro,app.kubernetes.io/component=gateway"),
        )
        .await
        .unwrap()
        .items
    {
        let logs = c
            .api::<Pod>()
            .logs(&pod.name_any(), &Default::default())
            .await
            .unwrap_or_default();
        seen |= logs.contains(&format!("\"remote_addr\":\"{PROXY_CLIENT}\""));
    }
    assert!(
        seen,
        "the access log names the client from the PROXY header"
    );
    c.log("ok: bistro serves HTTPS with HTTP/2 and HSTS, redirects plain HTTP with 308, and logs the client address from the PROXY protocol");
    untrusted_proxy_headers(c).await;

    // Switching engines is refused at admission.
    let refused = c
        .merge(
            "shop",
            json!({"spec": {"database": {"engine": "External", "external": {"secretName": "x"}}}}),
        )
        .await
        .expect_err("an engine switch was admitted");
    assert!(
        refused
            .to_string()
            .contains("database.engine cannot change"),
        "{refused}"
    );
    c.log("ok: switching shop's database engine is refused at admission");

    // NetworkPolicies can be switched off, and on again.
    for (enabled, wanted) in [(false, 0), (true, 3)] {
        c.merge(
            "shop",
            json!({"spec": {"networkPolicy": {"enabled": enabled}}}),
        )
        .await
        .unwrap();
        c.eventually(
            &format!("shop has {wanted} NetworkPolicies"),
            minute,
            || async {
                let n = c
                    .api::<NetworkPolicy>()
                    .list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len();
                if n == wanted {
                    Ok(())
                } else {
                    Err(format!("{n}"))
                }
            },
        )
        .await;
    }
}

/// A PostgreSQL started outside any FoodApp (its own Deployment, with a
/// role that owns its database and is not a superuser), and a FoodApp with
/// engine External on it that becomes Ready and takes an order.
async fn external_database(c: &Cluster, discovery: &Discovery) {
    let minute = Duration::from_secs(60);
    let image = setting("FOODAPP_E2E_POSTGRES_IMAGE", "postgres:16");
    let labels = json!({"app": "external-pg"});
    let security =
        json!({"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": true});
    let scratch = |name: &str| json!({"name": name, "emptyDir": {}});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "external-pg", "namespace": c.ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "securityContext": security,
                "containers": [{"name": "postgres", "image": image,
                    "env": [{"name": "POSTGRES_USER", "value": "admin"},
                            {"name": "POSTGRES_PASSWORD", "value": "admin-password-1"},
                            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                    "ports": [{"containerPort": 5432}],
                    "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1"]}, "periodSeconds": 2},
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                                     {"name": "run", "mountPath": "/var/run/postgresql"},
                                     {"name": "tmp", "mountPath": "/tmp"}]}],
                "volumes": [scratch("data"), scratch("run"), scratch("tmp")]}}}});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "external-pg", "namespace": c.ns},
        "spec": {"selector": labels, "ports": [{"port": 5432, "targetPort": 5432}]}});
    let host = format!("external-pg.{}.svc", c.ns);
    let setup = format!(
        "until psql -h {host} -U admin -d postgres -c 'SELECT 1' >/dev/null 2>&1; do sleep 2; done; \
         psql -v ON_ERROR_STOP=1 -h {host} -U admin -d postgres \
           -c \"CREATE ROLE cafe LOGIN NOSUPERUSER PASSWORD 'cafe-password-1'\" \
           -c 'CREATE DATABASE cafe OWNER cafe'"
    );
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "external-pg-setup", "namespace": c.ns},
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 300, "template": {"spec": {
            "restartPolicy": "Never", "securityContext": security,
            "containers": [{"name": "setup", "image": image, "command": ["sh", "-c", setup],
                "env": [{"name": "PGPASSWORD", "value": "admin-password-1"}]}]}}}});
    for obj in [&deployment, &service, &job] {
        c.apply_value(discovery, obj, &c.ns).await;
    }
    c.eventually(
        "the external PostgreSQL has the role cafe and its database",
        3 * minute,
        || async {
            let j = c
                .api::<k8s_openapi::api::batch::v1::Job>()
                .get("external-pg-setup")
                .await
                .map_err(|e| e.to_string())?;
            let s = j.status.unwrap_or_default();
            if s.succeeded.unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cafe-database", "namespace": c.ns},
        "stringData": {"host": host, "port": "5432", "database": "cafe", "user": "cafe",
            "password": "cafe-password-1", "sslmode": "disable"}});
    c.apply_value(discovery, &secret, &c.ns).await;
    let mut cafe = example("foodapp-external.yaml", &c.ns);
    cafe.spec.backup = None;
    if let Some(e) = cafe.spec.database.external.as_mut() {
        e.secret_name = "cafe-database".into();
    }
    apply_foodapp(c, &cafe).await;
    c.eventually(
        "FoodApp cafe (engine External) is Ready",
        5 * minute,
        || c.ready("cafe"),
    )
    .await;
    assert!(
        c.api::<StatefulSet>()
            .get_opt("cafe-db")
            .await
            .unwrap()
            .is_none(),
        "no database pods for engine External"
    );
    let admin = c
        .eventually("cafe's admin logs in", 2 * minute, || c.admin_token("cafe"))
        .await;
    let (status, category, _) = c
        .gateway(
            "cafe",
            "POST",
            "/api/v1/categories",
            Some(json!({"name": "Soups"})),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{category}");
    let (status, item, _) = c
        .gateway(
            "cafe",
            "POST",
            "/api/v1/menu-items",
            Some(json!({"category_id": category["id"], "name": "Tomato soup", "price_cents": 650, "stock": 10})),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let (status, body, _) = c
        .gateway(
            "cafe",
            "POST",
            "/api/v1/auth/register",
            Some(json!({"email": "eve@example.com", "password": "correct horse battery", "name": "Eve"})),
            None,
        )
        .await;
    assert!(status == 201 || status == 200, "register: {status} {body}");
    let (status, body, _) = c
        .gateway(
            "cafe",
            "POST",
            "/api/v1/auth/token",
            Some(json!({"email": "eve@example.com", "password": "correct horse battery"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let customer = body["access_token"].as_str().unwrap().to_owned();
    let (status, order, _) = c
        .gateway_with(
            "cafe",
            "POST",
            "/api/v1/orders",
            Some(
                json!({"items": [{"menu_item_id": item["id"], "quantity": 2}],
                "payment": {"method": "card", "token": "tok_visa"}}),
            ),
            Some(&customer),
            &[("Idempotency-Key", "e2e-cafe-first-order")],
        )
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total_cents"], 1300, "{order}");
    c.log("ok: FoodApp cafe on an external PostgreSQL (its own Deployment, a role that owns its database) is Ready and took an order");
}

/// CloudNativePG's CRDs (plural names) from its v1.30 release.
const CNPG_KINDS: [&str; 4] = ["backups", "clusters", "poolers", "scheduledbackups"];

async fn database_condition(c: &Cluster, app: &str) -> Result<(String, String, String), String> {
    let fa = c
        .api::<FoodApp>()
        .get(app)
        .await
        .map_err(|e| e.to_string())?;
    let status = fa.status.ok_or("no status")?;
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DatabaseReady")
        .ok_or("no DatabaseReady")?;
    Ok((
        cond.status.clone(),
        cond.reason.clone(),
        cond.message.clone(),
    ))
}
