//! Records the git revision for `presence_build_info` (PRESENCE_REVISION:
//! taken from the environment when the build sets it, as a container build
//! without `.git` may, else from `git rev-parse`, else `unknown`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PRESENCE_REVISION");
    let revision = std::env::var("PRESENCE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let r = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !r.is_empty()).then_some(r)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    // The revision changes with every commit; rebuild when HEAD moves.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
    println!("cargo:rustc-env=PRESENCE_REVISION={revision}");
}
