//! Process and build metrics every node exports, whatever its mode:
//! `process_*` from the prometheus crate's Linux process collector (open
//! file descriptors matter here: one per socket), and
//! `presence_build_info{version,revision}`, always 1.

use prometheus::{IntGaugeVec, Opts, Registry};

/// The crate version, and the git revision the build saw (`PRESENCE_REVISION`
/// at build time, set by build.rs; `unknown` outside a git checkout).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("PRESENCE_REVISION");

/// Registers `process_*` and `presence_build_info` in `registry`.
pub fn export(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let info = IntGaugeVec::new(
        Opts::new(
            "presence_build_info",
            "Always 1; the labels say which build of presenced this is.",
        ),
        &["version", "revision"],
    )?;
    info.with_label_values(&[VERSION, REVISION]).set(1);
    registry.register(Box::new(info))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_and_build_info_are_exported() {
        let registry = Registry::new();
        export(&registry).unwrap();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "presence_build_info",
            "process_open_fds",
            "process_max_fds",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let info = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "presence_build_info")
            .unwrap();
        let labels: Vec<(String, String)> = info.get_metric()[0]
            .get_label()
            .iter()
            .map(|l| (l.name().to_owned(), l.value().to_owned()))
            .collect();
        assert!(labels.contains(&("version".to_owned(), VERSION.to_owned())));
        assert!(!REVISION.is_empty());
    }
}
