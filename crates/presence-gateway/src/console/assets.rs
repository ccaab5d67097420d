//! The console's files, embedded in the binary at compile time: the page,
//! its stylesheet, and the ES modules compiled from `clients/js` (the
//! client library and the console built on it). They are committed to the
//! repository (`make js` rebuilds them), so building `presenced` needs no
//! node, and nothing is read from disk or fetched at run time.

/// One embedded file.
pub struct Asset {
    /// The path under `/console/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

macro_rules! module {
    ($path:literal) => {
        Asset {
            path: concat!("assets/", $path),
            content_type: JS,
            body: include_str!(concat!("../../../../clients/js/dist/", $path)),
        }
    };
}

/// The page every console route serves.
pub const INDEX: Asset = Asset {
    path: "",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../../../clients/js/console/index.html"),
};

/// Every other file, by its path under `/console/`.
pub const FILES: &[Asset] = &[
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../../clients/js/console/console.css"),
    },
    module!("activity.js"),
    module!("backoff.js"),
    module!("client.js"),
    module!("device.js"),
    module!("emitter.js"),
    module!("errors.js"),
    module!("index.js"),
    module!("protocol.js"),
    module!("store.js"),
    module!("console/admin_pages.js"),
    module!("console/api.js"),
    module!("console/app.js"),
    module!("console/cluster_page.js"),
    module!("console/dom.js"),
    module!("console/session.js"),
    module!("console/user_pages.js"),
];

/// The file at `path` (under `/console/`), if there is one.
pub fn find(path: &str) -> Option<&'static Asset> {
    FILES.iter().find(|asset| asset.path == path)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn dist() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/dist")
    }

    fn modules(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("clients/js/dist exists") {
            let entry = entry.expect("readable dist entry");
            let name = entry.file_name().into_string().expect("utf-8 file name");
            if entry.file_type().expect("file type").is_dir() {
                modules(&entry.path(), &format!("{prefix}{name}/"), out);
            } else if name.ends_with(".js") {
                out.push(format!("{prefix}{name}"));
            }
        }
    }

    /// A module added to `clients/js` but not to [`FILES`] would be a 404
    /// in the browser; this catches it at `cargo test` time.
    #[test]
    fn every_compiled_module_is_embedded() {
        let mut on_disk = Vec::new();
        modules(&dist(), "", &mut on_disk);
        let mut embedded: Vec<String> = FILES
            .iter()
            .filter_map(|a| a.path.strip_prefix("assets/"))
            .map(str::to_owned)
            .collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn embedded_modules_are_the_files_on_disk() {
        for asset in FILES.iter().filter(|a| a.path.starts_with("assets/")) {
            let file = dist().join(asset.path.trim_start_matches("assets/"));
            let on_disk = std::fs::read_to_string(&file).expect("the embedded module exists");
            assert_eq!(on_disk, asset.body, "{}", file.display());
        }
    }
}
