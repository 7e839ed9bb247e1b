//! The Debian package: scripts/package.sh builds postgresql-15-admin-toolkit, `apt-get install
//! ./…deb` installs it on this machine, a server creates the extension from it and runs its
//! worker, the CLI is on the PATH; then the README's uninstall steps (drop the extension, take the
//! library out of the configuration, restart), and `apt-get remove` takes every file away again
//! and the server still starts. The files
//! the package replaces (the release build scripts/test.sh installed) are put back afterwards,
//! whatever happens, so the tests after this one run against the same build.

use admin_toolkit_it::installed::Displaced;
use admin_toolkit_it::{extension_version, server_major, Cluster, ClusterOptions, ScratchDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PACKAGE: &str = "postgresql-15-admin-toolkit";
const PROGRAM_PACKAGE: &str = "admin-toolkit";

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

/// The directory of the .debs: `$ADMIN_TOOLKIT_DEBS` (scripts/test.sh builds them first: the
/// admin-toolkit program's and one per PostgreSQL major), else this server's major and the
/// program's built now by scripts/package.sh in a target directory of its own (cargo test
/// holds the workspace's lock).
fn debs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(path) = std::env::var_os("ADMIN_TOOLKIT_DEBS") {
            return PathBuf::from(path);
        }
        let dir = repo().join("target/package/debian");
        for what in ["cli".to_string(), server_major().to_string()] {
            let out = Command::new("bash")
                .arg(repo().join("scripts/package.sh"))
                .args([&what, &dir.to_string_lossy().into_owned()])
                .env("CARGO_TARGET_DIR", repo().join("target/package"))
                .output()
                .expect("run scripts/package.sh");
            assert!(
                out.status.success(),
                "scripts/package.sh {what} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
    .clone()
}

/// The .deb of package `name` in [`debs`] (this version's).
fn deb(name: &str) -> PathBuf {
    let prefix = format!("{name}_{}-", extension_version());
    std::fs::read_dir(debs())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}*.deb in {}", debs().display()))
}

/// Every extension package in [`debs`]: (major, .deb).
fn extension_debs() -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(debs())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let file = p.file_name()?.to_string_lossy().into_owned();
            let major: u32 = file
                .strip_prefix("postgresql-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            // This version's only: an older build's .deb may be left in the directory.
            let this_version = format!("postgresql-{major}-admin-toolkit_{}-", extension_version());
            (file.starts_with(&this_version) && file.ends_with(".deb")).then_some((major, p))
        })
        .collect();
    found.sort();
    found
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

fn control_field(deb: &Path, field: &str) -> String {
    run("dpkg-deb", &["-f", &deb.to_string_lossy(), field])
        .trim()
        .to_string()
}

/// The files the package replaces, put back after it is removed (or after a failed assertion,
/// once the package is removed so that dpkg's database does not claim them).
struct Replaced(Displaced);

impl Drop for Replaced {
    fn drop(&mut self) {
        let _ignored = Command::new("dpkg")
            .args(["--remove", PACKAGE, PROGRAM_PACKAGE])
            .output();
        self.0.put_back();
    }
}

fn installed_status(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
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
    assert_eq!(
        server_major(),
        15,
        "this test installs the package for Debian's own PostgreSQL 15 (PG_BINDIR is another major's)"
    );
    let (deb, program_deb) = (deb(PACKAGE), deb(PROGRAM_PACKAGE));
    let files = package_files(&deb);
    let program_files = package_files(&program_deb);
    for expected in [
        "/usr/lib/postgresql/15/lib/admin_toolkit.so",
        "/usr/share/postgresql/15/extension/admin_toolkit.control",
        "/usr/share/postgresql/15/extension/admin_toolkit--0.1.0--0.2.0.sql",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(expected)),
            "{expected} in {files:?}"
        );
    }
    for expected in [
        "/usr/bin/admin-toolkit",
        "/usr/share/bash-completion/completions/admin-toolkit",
    ] {
        assert!(
            program_files.iter().any(|f| f == Path::new(expected)),
            "{expected} in {program_files:?}"
        );
    }
    // 0.5.0-1's postgresql-15-admin-toolkit held the program itself: apt may upgrade from it.
    for field in ["Replaces", "Breaks"] {
        assert_eq!(
            control_field(&program_deb, field),
            "postgresql-15-admin-toolkit (<< 0.5.0-2)"
        );
    }
    let all_files: Vec<PathBuf> = files.iter().chain(&program_files).cloned().collect();
    let _replaced = Replaced(Displaced::save(&all_files));

    // The extension's package depends on the program's: apt installs both from the two files.
    let deb_arg = deb.canonicalize().unwrap().to_string_lossy().into_owned();
    let program_arg = program_deb
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    run(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            &deb_arg,
            &program_arg,
        ],
    );
    assert_eq!(installed_status(PACKAGE), "install ok installed");
    assert_eq!(installed_status(PROGRAM_PACKAGE), "install ok installed");
    let owner = run(
        "dpkg",
        &["-S", "/usr/lib/postgresql/15/lib/admin_toolkit.so"],
    );
    assert!(owner.starts_with(PACKAGE), "{owner}");
    let owner = run("dpkg", &["-S", "/usr/bin/admin-toolkit"]);
    assert!(owner.starts_with(&format!("{PROGRAM_PACKAGE}:")), "{owner}");
    let version = run("/usr/bin/admin-toolkit", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("admin-toolkit {}", extension_version()),
        "the program on the PATH says the extension's version"
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

    run("apt-get", &["remove", "-y", PACKAGE, PROGRAM_PACKAGE]);
    for package in [PACKAGE, PROGRAM_PACKAGE] {
        let status = installed_status(package);
        assert!(
            !status.starts_with("install"),
            "{package} after removal: {status}"
        );
    }
    for f in &all_files {
        assert!(!f.exists(), "{} left behind by apt-get remove", f.display());
    }
    // The server starts without the package.
    cluster.restart();
    let mut db = cluster.connect("postgres");
    let one: i32 = db.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}

/// Each major's package, as far as it can be checked without installing it: PGDG's layout for its
/// major, dependencies on that server and on the program's package, no file another package
/// holds (so majors install side by side); the library from this server's major's package loads
/// into this server, and another major's is refused by PostgreSQL (the README tells which
/// package each of its messages means).
#[test]
fn every_majors_package_has_its_layout_and_its_library_loads_into_its_server() {
    let major = server_major();
    let version = extension_version();
    let packages = extension_debs();
    assert!(
        packages.iter().any(|(m, _)| *m == major),
        "no package for PostgreSQL {major} in {}",
        debs().display()
    );
    let program_files = package_files(&deb(PROGRAM_PACKAGE));
    let mut seen: Vec<PathBuf> = program_files.clone();
    let unpacked = ScratchDir::new("admin_toolkit_it_debs_");
    let mut libraries = Vec::new();
    for (m, deb) in &packages {
        let files = package_files(deb);
        let lib = PathBuf::from(format!("/usr/lib/postgresql/{m}/lib/admin_toolkit.so"));
        for expected in [
            lib.clone(),
            PathBuf::from(format!(
                "/usr/share/postgresql/{m}/extension/admin_toolkit.control"
            )),
            PathBuf::from(format!(
                "/usr/share/postgresql/{m}/extension/admin_toolkit--{version}.sql"
            )),
            PathBuf::from(format!(
                "/usr/share/postgresql/{m}/extension/admin_toolkit--0.4.0--0.5.0.sql"
            )),
        ] {
            assert!(
                files.contains(&expected),
                "{} in {files:?}",
                expected.display()
            );
        }
        for f in &files {
            let s = f.to_string_lossy();
            assert!(
                s.starts_with(&format!("/usr/lib/postgresql/{m}/"))
                    || s.starts_with(&format!("/usr/share/postgresql/{m}/"))
                    || s.starts_with(&format!("/usr/share/doc/postgresql-{m}-admin-toolkit/")),
                "{s}: outside PostgreSQL {m}'s directories"
            );
            assert!(!seen.contains(f), "{s} is in two packages");
        }
        seen.extend(files);
        let depends = control_field(deb, "Depends");
        assert!(
            depends.contains(&format!("postgresql-{m},"))
                && depends.contains(&format!("admin-toolkit (= {version}-")),
            "{}: Depends: {depends}",
            deb.display()
        );
        let into = unpacked.path().join(m.to_string());
        run(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &into.to_string_lossy()],
        );
        libraries.push((*m, into.join(lib.strip_prefix("/").unwrap())));
    }
    run("chmod", &["-R", "a+rX", &unpacked.path().to_string_lossy()]);

    let cluster = Cluster::start_with(ClusterOptions::not_preloaded());
    let mut db = cluster.connect("postgres");
    for (m, library) in &libraries {
        let loaded = db.batch_execute(&format!("LOAD '{}'", library.display()));
        if *m == major {
            loaded.unwrap_or_else(|e| panic!("PostgreSQL {major}'s package's library: {e:?}"));
        } else {
            // PostgreSQL refuses it before any of its code runs: the dynamic loader finds
            // symbols this server does not have (15 -> 18: pqsignal, renamed in 18), or else the
            // magic block's version check does. The message names the file, and the README
            // says which package that means.
            let e = loaded.expect_err("another major's library is refused");
            let db_error = e.as_db_error().expect("a server error");
            let detail = db_error.detail().unwrap_or_default();
            let message = db_error.message();
            assert!(
                message.contains(&library.display().to_string())
                    && (message.contains("undefined symbol")
                        || (message.contains("incompatible library")
                            && detail.contains(&format!("Server is version {major}"))
                            && detail.contains(&format!("library is version {m}")))),
                "{db_error:?}"
            );
        }
    }
}
