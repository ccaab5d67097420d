//! The backend conformance suite (`conformance/`) against the embedded
//! [`MemoryBackend`] on a [`MemoryStore`]. A restart shuts the backend
//! down and starts a new one on the same store, as `presenced` does on the
//! same data directory. Each case is a test `<case>::memory`.

mod conformance;

use std::sync::Arc;

use conformance::{BackendHarness, HarnessConfig};
use presence_backend::Backend;
use presence_embedded::{MemoryBackend, MemoryConfig, MemoryStore, SystemClock};

struct MemoryHarness {
    config: HarnessConfig,
    store: Arc<MemoryStore>,
    backend: Option<MemoryBackend>,
}

impl MemoryHarness {
    fn launch(&self) -> MemoryBackend {
        let config = MemoryConfig {
            disconnect_grace: self.config.disconnect_grace,
            ..MemoryConfig::default()
        };
        MemoryBackend::start(config, self.store.clone(), Arc::new(SystemClock))
            .expect("the memory backend starts")
    }
}

impl BackendHarness for MemoryHarness {
    async fn start_with(config: HarnessConfig) -> Self {
        let mut harness = MemoryHarness {
            config,
            store: Arc::new(MemoryStore::new()),
            backend: None,
        };
        harness.backend = Some(harness.launch());
        harness
    }

    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(self.backend.clone().expect("the backend is running"))
    }

    async fn stop(&mut self) {
        // Shutting down stops the timer task, which would otherwise keep
        // the old backend alive and writing to the shared store.
        if let Some(backend) = self.backend.take() {
            backend.shutdown().await;
        }
    }

    async fn resume(&mut self) {
        assert!(self.backend.is_none(), "resume without stop");
        self.backend = Some(self.launch());
    }
}

conformance::conformance_tests!(memory => MemoryHarness);
