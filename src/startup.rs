//! Building and running the application: open the store, bind the listener, start the HTTP
//! server, and stop it all gracefully when the `shutdown` future given to
//! [`Application::run_until_stopped`] resolves.

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::ratelimit::KeyedLimiter;
use crate::engine;
use crate::http;
use crate::outbound::deliver::Sender;
use crate::outbound::dispatcher;
use crate::service::Gateway;
use crate::store::cache::HotCache;
use crate::store::{self, Store};

/// A built, listening application.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    store: Arc<dyn Store>,
    gateway: web::Data<Gateway>,
    engine_stop: CancellationToken,
    engine_task: tokio::task::JoinHandle<()>,
    retention_task: tokio::task::JoinHandle<()>,
    dispatcher_stop: CancellationToken,
    dispatcher_task: tokio::task::JoinHandle<()>,
}

/// Upper bounds of the buckets of every `*_seconds` histogram: 0.1 ms (a status read answered
/// from memory) to 60 s (the longest `?wait=` long poll).
const SECONDS_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The exporter, with every histogram rendered as a Prometheus histogram of fixed buckets
/// rather than a summary: its buckets add up across the nodes of one database (quantiles do
/// not), and each series holds a few counters instead of a sketch of the last minute's samples
/// (summaries kept 1.3 MiB resident in the upkeep thread's heap after half a minute of load;
/// histograms, 72 KiB). The SQLite writer's sizes (how many writes one transaction or one
/// coalesced group held) get powers of two up to the most a group can hold; a batch holds at
/// most `writer.max_batch`, 512 by default.
fn prometheus_builder() -> PrometheusBuilder {
    use crate::store::sqlite::{BATCH_SIZE_METRIC, GROUP_SIZE_METRIC, MAX_PENDING};
    let sizes: Vec<f64> = std::iter::successors(Some(1.0), |b| Some(b * 2.0))
        .take_while(|&b| b <= MAX_PENDING as f64)
        .collect();
    [
        (Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS[..]),
        (Matcher::Full(BATCH_SIZE_METRIC.into()), &sizes[..]),
        (Matcher::Full(GROUP_SIZE_METRIC.into()), &sizes[..]),
    ]
    .into_iter()
    .fold(PrometheusBuilder::new(), |builder, (matcher, buckets)| {
        builder
            .set_buckets_for_metric(matcher, buckets)
            .expect("the buckets are not empty")
    })
}

/// The process-wide Prometheus recorder; installed once, shared by every application in the
/// process (tests start several).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("triggerd-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok();
            handle
        })
        .clone()
}

impl Application {
    /// Opens and migrates the database, binds `settings.listen` and starts serving.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let node_id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let lease = settings.node.lease()?;
        // Read before anything starts, so a bad file stops the start at once.
        let certificates = match settings.tls.files()? {
            Some((cert, key)) => Some(crate::tls::Certificates::load(cert, key)?),
            None => None,
        };
        crate::tls::reload_on_sighup(certificates.clone())?;
        if certificates.is_some() && settings.public_url.is_none() {
            tracing::warn!("TLS is on but public_url is not set: generated links name the listen address, which the certificate may not cover; set public_url to the name in the certificate");
        }
        let run_user = engine::run_user::RunUser::for_this_process(settings.run_user.as_deref())
            .map_err(anyhow::Error::msg)?;
        // Absolute: steps get paths under it, and run elsewhere than the server.
        let mut work_root = std::path::absolute(settings.work_root())
            .context("resolving the working directories' place")?;
        if let Some(user) = &run_user {
            if !user.can_reach(&work_root) {
                anyhow::ensure!(
                    settings.work_dir.is_none(),
                    "work_dir {} is out of reach of run_user {}: a directory above it does not let that user pass; make them passable (chmod o+x) or choose another work_dir",
                    work_root.display(),
                    user.name
                );
                let fallback = user.reachable_work_root(&work_root);
                tracing::info!(
                    default = %work_root.display(),
                    used = %fallback.display(),
                    run_user = %user.name,
                    "the working directories' default place is out of the Run steps' user's reach; using another"
                );
                work_root = fallback;
            }
            tracing::info!(run_user = %user.name, uid = user.uid, "Run steps run as an unprivileged user");
        }
        engine::run_user::own_work_root(&work_root, run_user.is_some())
            .map_err(anyhow::Error::msg)?;
        // Started from the thread that runs the server, which lives as long as it does.
        let spawner = match &settings.step_supervisor {
            Some(binary) => Some(Arc::new(
                engine::spawner::Spawner::start(binary, settings.engine_nice, settings.workers)
                    .with_context(|| {
                        format!("starting the Run steps' spawner {}", binary.display())
                    })?,
            )),
            None => None,
        };
        let store = store::open(settings).await?;
        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let bound = listener.local_addr()?;
        let engine_stop = CancellationToken::new();
        let (engine, engine_task) = engine::start(
            store.clone(),
            engine::EngineOptions {
                workers: settings.workers,
                grace: Duration::from_secs(settings.shutdown_grace_secs),
                work_root,
                launch: engine::Launch {
                    spawner,
                    user: run_user,
                },
                node_id: node_id.clone(),
                lease,
            },
            engine_stop.clone(),
        );
        let retention_task =
            engine::retention::spawn(store.clone(), settings.retention_days, engine_stop.clone());
        let outbound = settings.outbound.parse()?;
        let sender = Sender::new(Arc::new(outbound.policy), outbound.timeout)
            .context("building the outbound HTTP client")?;
        let dispatcher_stop = CancellationToken::new();
        let (dispatcher, dispatcher_task) = dispatcher::start(
            store.clone(),
            dispatcher::DispatcherOptions {
                sender: sender.clone(),
                retry_schedule: outbound.retry_schedule,
                disable_after: outbound.disable_after,
                concurrency: settings.outbound.concurrency,
                node_tags: settings.node.tags.clone(),
                grace: Duration::from_secs(settings.shutdown_grace_secs),
                // An attempt runs at most `outbound.timeout`; the lease outlasts it.
                lease: lease + outbound.timeout,
            },
            dispatcher_stop.clone(),
        );
        let gateway = web::Data::new(Gateway {
            store: store.clone(),
            cache: HotCache::new(),
            keys: settings.key_verifier(),
            public_url: settings.public_base(bound),
            last_work_announce: std::sync::atomic::AtomicI64::new(0),
            body_limits: crate::service::BodyLimits {
                max_bytes: settings.max_body_bytes,
                deadline: settings.body_timeout()?,
            },
            rate_limits: KeyedLimiter::new(),
            engine,
            sender,
            dispatcher,
            node_id: node_id.clone(),
            evaluations: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
        });
        let statuses = Arc::clone(&gateway.cache.statuses);
        if store.watch_statuses(Arc::new(move |events| statuses.changed(events))) {
            gateway.cache.statuses.watch();
        }
        if let Some(changes) = store.subscribe() {
            tokio::spawn(apply_announced(gateway.clone().into_inner(), changes));
        }
        let metrics = web::Data::new(metrics_handle());
        let app_gateway = gateway.clone();
        let mut server = HttpServer::new(move || {
            crate::memory::on_http_worker();
            crate::store::relay::on_http_worker();
            App::new()
                .wrap(http::middleware::RequestContext)
                .app_data(app_gateway.clone())
                .app_data(metrics.clone())
                .configure(crate::console::configure)
                .configure(http::configure)
        })
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace_secs);
        server = match certificates {
            Some(certificates) => {
                server.listen_rustls_0_23(listener, certificates.server_config()?)?
            }
            None => server.listen(listener)?,
        };
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        tracing::info!(listen = %bound, tls = settings.tls.cert.is_some(), public_url = %gateway.public_url, node = %node_id, "triggerd listening");
        Ok(Self {
            port: bound.port(),
            server: server.run(),
            store,
            gateway,
            engine_stop,
            engine_task,
            retention_task,
            dispatcher_stop,
            dispatcher_task,
        })
    }

    /// The bound port (useful with `listen = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared services, for bootstrap and the demo seeder.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone().into_inner()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
    /// commits every queued write and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        // Polled here, not spawned: its first poll starts the HTTP worker threads, which take
        // the CPU priority of the thread that starts them. `serve` runs this on its main thread,
        // whose priority is above the runtime's (see `cli::server::serve_runtime`).
        let mut server = self.server;
        let engine_stop = self.engine_stop.clone();
        let served = tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                tracing::info!("shutting down: no longer accepting, finishing in-flight requests");
                // No new executions or steps start from now; running steps may finish.
                engine_stop.cancel();
                // The server stops only while it is polled.
                let ((), result) = tokio::join!(handle.stop(true), &mut server);
                result
            }
        };
        // Stop claiming work and let running steps finish within the grace period; steps still
        // running then are killed, and marked interrupted at the next start.
        self.engine_stop.cancel();
        let _ = self.engine_task.await;
        let _ = self.retention_task.await;
        // The engine's last events are in the outbox; the dispatcher stops after the engine so
        // attempts in flight are recorded. Whatever is left goes out after the next start.
        self.dispatcher_stop.cancel();
        let _ = self.dispatcher_task.await;
        // Flush the writer whatever happened to the HTTP server.
        self.store.close().await;
        tracing::info!("stopped: every acknowledged write is committed");
        served.context("the HTTP server failed")
    }
}

/// Applies the changes other nodes announce until the store stops announcing them. A
/// receiver that fell behind drops every cache rather than guess what it missed.
async fn apply_announced(
    gateway: Arc<crate::service::Gateway>,
    mut changes: tokio::sync::broadcast::Receiver<crate::store::Change>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match changes.recv().await {
            Ok(change) => gateway.apply(&change),
            Err(RecvError::Lagged(_)) => gateway.apply(&crate::store::Change::Resync),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
