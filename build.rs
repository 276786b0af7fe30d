//! Records the git commit the binary is built from, for `portcullis
//! --version`: `PORTCULLIS_COMMIT` is the short hash of `HEAD`, or "unknown"
//! outside a git checkout (a source tarball), and `PORTCULLIS_COMMIT_DATE`
//! its date (YYYY-MM-DD, for the man pages; empty outside git). Either set
//! by the builder wins, for builds from an export.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_COMMIT");
    let commit = std::env::var("PORTCULLIS_COMMIT").ok().or_else(|| {
        let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
        // Rebuild when HEAD moves: a commit, a checkout, a fetch into it.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for file in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            // A missing file would make cargo rerun this on every build.
            let path = git(&["rev-parse", "--git-path", file]);
            if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        Some(hash)
    });
    println!(
        "cargo:rustc-env=PORTCULLIS_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rerun-if-env-changed=PORTCULLIS_COMMIT_DATE");
    let date = std::env::var("PORTCULLIS_COMMIT_DATE")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%cs", "HEAD"]));
    println!(
        "cargo:rustc-env=PORTCULLIS_COMMIT_DATE={}",
        date.unwrap_or_default()
    );
}
