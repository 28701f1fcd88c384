//! [`ControlPlane`]: opens the store, seeds it, and hands out the REST
//! router, the in-process hooks and the metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ControlConfig};
use crate::rooms::Rooms;
use crate::tickets::{load_or_create_secret, TicketGate};
use crate::hooks::MediaHooks;
use crate::inproc::InProcessHooks;
use crate::metrics::ControlMetrics;
use crate::store::{SqliteStore, Store, StoreError};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The `[control]` table is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database could not be opened, migrated or seeded.
    #[error("control store: {0}")]
    Store(#[from] StoreError),
    /// A metric could not be built or registered (e.g. registered twice).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The play-token secret could not be read or created under the data dir.
    #[error("play token secret under {path}: {source}")]
    PlayTokenSecret {
        /// The data directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// State shared by the router, the hooks and the handles.
pub(crate) struct Inner {
    pub(crate) config: ControlConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: Arc<ControlMetrics>,
    pub(crate) hooks: Arc<InProcessHooks>,
    /// API token -> caller, so a busy client does not cost a read per
    /// request. Tokens cannot be revoked yet; when they can, clear it there.
    pub(crate) auth_cache: crate::inproc::TtlCache<String, crate::store::Caller>,
    /// Registered edges, their health and the selector.
    pub(crate) edges: Arc<crate::edges::EdgeRegistry>,
    /// Rooms, chat, gift events and ticket prices.
    pub(crate) rooms: Arc<crate::rooms::Rooms>,
    /// Epochs and claims, once [`ControlPlane::start_settlement`] opened the chain.
    pub(crate) settlement: std::sync::OnceLock<Arc<crate::settlement::Settlement>>,
}

/// The control plane of one process. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// How long an authenticated API token is remembered.
const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Unix time in milliseconds; the store takes time as an argument.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Moves the rooms' in-memory activity tally into the store in one
/// transaction; on failure the tally is kept for the next try. Blocking.
pub(crate) fn flush_activity(rooms: &Rooms, store: &dyn Store) -> Result<(), StoreError> {
    let activity = rooms.activity();
    let tally = activity.drain();
    if tally.is_empty() {
        return Ok(());
    }
    if let Err(e) = store.add_activity(tally.clone()) {
        activity.restore(tally);
        return Err(e);
    }
    Ok(())
}

impl ControlPlane {
    /// Validates `config`, opens (or creates) the SQLite file under
    /// `data_dir`, applies migrations and creates the seed accounts.
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(config: ControlConfig, data_dir: &Path) -> Result<ControlPlane, ControlError> {
        Self::open_with_clock(config, data_dir, Arc::new(SystemClock))
    }

    /// [`ControlPlane::open`] with the clock rooms, votes and tickets read
    /// (tests pass a [`crate::ManualClock`] to advance days without sleeping).
    pub fn open_with_clock(
        config: ControlConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<ControlPlane, ControlError> {
        config.validate()?;
        std::fs::create_dir_all(data_dir).map_err(|source| ControlError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(&config.database_file);
        let _span = tracing::info_span!("control_open", path = %path.display()).entered();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
            &path,
            config.sqlite_synchronous,
            config.sqlite_read_connections,
        )?);
        store.seed(&config, now_ms())?;
        Self::build(config, store, clock, Some(data_dir))
    }

    /// Builds a control plane over any [`Store`] (another backend, tests).
    /// The store must already be migrated and seeded. Without a data dir,
    /// a play-token secret that is not configured lives only in memory.
    pub fn with_store(
        config: ControlConfig,
        store: Arc<dyn Store>,
    ) -> Result<ControlPlane, ControlError> {
        Self::build(config, store, Arc::new(SystemClock), None)
    }

    fn build(
        config: ControlConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        data_dir: Option<&Path>,
    ) -> Result<ControlPlane, ControlError> {
        config.validate()?;
        let metrics = Arc::new(ControlMetrics::new(config.metrics_max_channels)?);
        let secret = load_or_create_secret(config.play_token_secret.as_deref(), data_dir)
            .map_err(|source| ControlError::PlayTokenSecret {
                path: data_dir.map(Path::to_path_buf).unwrap_or_default(),
                source,
            })?;
        let gate = Arc::new(TicketGate::new(secret));
        let rooms = Rooms::new(
            config.rooms.clone(),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            Arc::clone(&gate),
            store.rooms_snapshot()?,
        );
        let hooks = Arc::new(InProcessHooks::new(
            &config,
            Arc::clone(&store),
            Arc::clone(&metrics),
            gate,
            clock,
            Arc::clone(&rooms),
        ));
        let edges = Arc::new(crate::edges::EdgeRegistry::new(config.edges.clone()));
        let restored = store.edges()?.into_iter().filter_map(|(id, json)| match serde_json::from_str(&json) {
            Ok(reg) => Some(reg),
            Err(e) => {
                tracing::warn!(edge = %id, error = %e, "unreadable edge registration skipped");
                None
            }
        });
        edges.restore(restored);
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                edges,
                config,
                store,
                metrics,
                hooks,
                rooms,
                auth_cache: crate::inproc::TtlCache::new(AUTH_CACHE_TTL),
                settlement: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Writes the in-memory activity tally (rewards) to the database in one
    /// transaction; on failure the tally is kept for the next try.
    /// Blocking: call it from `spawn_blocking`.
    pub fn flush_activity(&self) -> Result<(), ControlError> {
        Ok(flush_activity(&self.inner.rooms, self.inner.store.as_ref())?)
    }

    /// Flushes the activity tally every `control.rewards.flush_interval_ms`
    /// until `stop` resolves, and once more at the end.
    pub async fn run_activity_flusher(self, stop: impl std::future::Future<Output = ()>) {
        let every = std::time::Duration::from_millis(self.inner.config.rewards.flush_interval_ms);
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                _ = &mut stop => true,
                _ = tokio::time::sleep(every) => false,
            };
            let plane = self.clone();
            match tokio::task::spawn_blocking(move || plane.flush_activity()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "activity tally not written; kept for the next flush"),
                Err(e) => tracing::warn!(error = %e, "activity flush task failed"),
            }
            if stopping {
                return;
            }
        }
    }

    /// The REST API, every route under `/v1`, state applied: merge it into
    /// the server's router.
    pub fn router(&self) -> axum::Router {
        crate::api::router(Arc::clone(&self.inner))
    }

    /// The in-process [`MediaHooks`] (cached publish and play checks, usage
    /// reports straight into the store).
    pub fn hooks(&self) -> Arc<dyn MediaHooks> {
        Arc::clone(&self.inner.hooks) as Arc<dyn MediaHooks>
    }

    /// Registers the control plane's metrics into the server's registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), ControlError> {
        Ok(self.inner.metrics.register(registry)?)
    }

    /// The store, for tools and tests (audits, direct reads). Blocking.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.inner.store)
    }

    /// The edge registry (registrations, health, selection).
    pub fn edges(&self) -> Arc<crate::edges::EdgeRegistry> {
        Arc::clone(&self.inner.edges)
    }

    /// The rooms: the media server reports live state and viewer counts
    /// here ([`Rooms::stream_started`], [`Rooms::stream_ended`],
    /// [`Rooms::set_viewers`]); cheap and non-blocking.
    pub fn rooms(&self) -> Arc<Rooms> {
        Arc::clone(&self.inner.rooms)
    }

    /// The in-process hooks as their concrete type.
    pub fn in_process_hooks(&self) -> Arc<InProcessHooks> {
        Arc::clone(&self.inner.hooks)
    }

    /// Opens the settlement chain of `control.settlement` (the embedded EVM
    /// under `data_dir` by default, deploying the contracts at first start),
    /// anchors any computed epoch still off chain, and serves epochs and
    /// claims from then on. Call once; a second call returns the first.
    pub async fn start_settlement(
        &self,
        data_dir: &Path,
    ) -> Result<Arc<crate::settlement::Settlement>, crate::settlement::SettlementError> {
        if let Some(s) = self.inner.settlement.get() {
            return Ok(Arc::clone(s));
        }
        let chain = crate::settlement::open_chain(&self.inner.config.settlement, data_dir).await?;
        self.attach_settlement(chain).await
    }

    /// Serves epochs and claims on an already opened `chain` (tools, tests,
    /// `westream verify` on a read-only snapshot).
    pub async fn attach_settlement(
        &self,
        chain: Arc<dyn crate::settlement::Chain>,
    ) -> Result<Arc<crate::settlement::Settlement>, crate::settlement::SettlementError> {
        let settlement = crate::settlement::Settlement::new(self, chain);
        let settlement = Arc::clone(self.inner.settlement.get_or_init(|| settlement));
        if let Err(e) = settlement.anchor_pending().await {
            tracing::warn!(error = %e, "computed epochs not anchored yet; retried at the next epoch");
        }
        Ok(settlement)
    }

    /// The settlement, once started.
    pub fn settlement(&self) -> Option<Arc<crate::settlement::Settlement>> {
        self.inner.settlement.get().cloned()
    }

    /// The validated configuration in force.
    pub fn config(&self) -> &ControlConfig {
        &self.inner.config
    }
}
