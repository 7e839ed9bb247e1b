//! The Debian package: scripts/package.sh builds postgresql-15-admin-toolkit, `apt-get install
//! ./…deb` installs it on this machine, a server creates the extension from it and runs its
//! worker, the CLI is on the PATH; then the README's uninstall steps (drop the extension, take the
//! library out of the configuration, restart), and `apt-get remove` takes every file away again
//! and the server still starts. The files
//! the package replaces (the release build scripts/test.sh installed) are put back afterwards,
//! whatever happens, so the tests after this one run against the same build.

use admin_toolkit_it::installed::Displaced;
use admin_toolkit_it::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "postgresql-15-admin-toolkit";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// The .deb: `$ADMIN_TOOLKIT_DEB` (scripts/test.sh builds it first), else built now by
/// scripts/package.sh in a target directory of its own (cargo test holds the workspace's lock).
fn deb() -> PathBuf {
    if let Some(path) = std::env::var_os("ADMIN_TOOLKIT_DEB") {
        return PathBuf::from(path);
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .env("CARGO_TARGET_DIR", repo().join("target/package"))
        .output()
        .expect("run scripts/package.sh");
    assert!(
        out.status.success(),
        "scripts/package.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("the .deb's path").trim())
}

/// Files the package holds (absolute paths), from the .deb itself.
fn package_files(deb: &Path) -> Vec<PathBuf> {
    let listing = run("dpkg-deb", &["-c", &deb.to_string_lossy()]);
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| PathBuf::from(p.trim_start_matches('.')))
        .collect()
}

/// The files the package replaces, put back after it is removed (or after a failed assertion,
/// once the package is removed so that dpkg's database does not claim them).
struct Replaced(Displaced);

impl Drop for Replaced {
    fn drop(&mut self) {
        let _ignored = Command::new("dpkg").args(["--remove", PACKAGE]).output();
        self.0.put_back();
    }
}

fn installed_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_creates_the_extension_and_removes_cleanly() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("installing a package needs root (CI runs the tests as root)");
    }
    let deb = deb();
    let files = package_files(&deb);
    for expected in [
        "/usr/lib/postgresql/15/lib/admin_toolkit.so",
        "/usr/share/postgresql/15/extension/admin_toolkit.control",
        "/usr/share/postgresql/15/extension/admin_toolkit--0.1.0--0.2.0.sql",
        "/usr/bin/admin-toolkit",
        "/usr/share/bash-completion/completions/admin-toolkit",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(expected)),
            "{expected} in {files:?}"
        );
    }
    let _replaced = Replaced(Displaced::save(&files));

    let deb_arg = deb.canonicalize().unwrap().to_string_lossy().into_owned();
    run(
        "apt-get",
        &["install", "-y", "--no-install-recommends", &deb_arg],
    );
    assert_eq!(installed_status(), "install ok installed");
    let owner = run(
        "dpkg",
        &["-S", "/usr/lib/postgresql/15/lib/admin_toolkit.so"],
    );
    assert!(owner.starts_with(PACKAGE), "{owner}");
    let version = run("/usr/bin/admin-toolkit", &["--version"]);
    assert!(
        version.starts_with("admin-toolkit "),
        "the CLI on the PATH: {version}"
    );

    let mut cluster = Cluster::start();
    {
        let mut db = cluster.connect("postgres");
        db.batch_execute("CREATE EXTENSION admin_toolkit").unwrap();
        let row = db
            .query_one(
                "SELECT b.version, b.build_profile, e.extversion FROM admin_toolkit.build_info() b, pg_extension e \
                 WHERE e.extname = 'admin_toolkit'",
                &[],
            )
            .unwrap();
        let (version, profile, extversion): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(profile, "release", "the package holds a release build");
        assert_eq!(version, extversion);
        admin_toolkit_it::wait_for("the packaged worker at work", || {
            cluster
                .server_log()
                .contains("admin_toolkit worker: extension found; starting work")
                .then_some(())
        });
        // The README's uninstall steps: drop the extension, take the library out of the
        // configuration and restart, then remove the package.
        db.batch_execute("DROP EXTENSION admin_toolkit").unwrap();
    }
    let conf = Path::new(&cluster.data_dir()).join("postgresql.conf");
    let kept: Vec<String> = std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("shared_preload_libraries") && !l.starts_with("admin_toolkit."))
        .map(str::to_string)
        .collect();
    std::fs::write(&conf, kept.join("\n") + "\n").unwrap();
    cluster.restart();

    run("apt-get", &["remove", "-y", PACKAGE]);
    let status = installed_status();
    assert!(!status.starts_with("install"), "after removal: {status}");
    for f in &files {
        assert!(!f.exists(), "{} left behind by apt-get remove", f.display());
    }
    // The server starts without the package.
    cluster.restart();
    let mut db = cluster.connect("postgres");
    let one: i32 = db.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}
