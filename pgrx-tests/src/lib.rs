//! Real PostgreSQL clusters for client-side tests of admin_toolkit, of the major in `$PG_BINDIR`
//! (PostgreSQL 15's Debian location when unset).
//!
//! Each [`Cluster`] is a scratch data directory with its own port on 127.0.0.1, run as the
//! `postgres` OS user when the tests run as root (PostgreSQL refuses to run as root). The
//! extension must already be installed into the server (`cargo pgrx install`); the README's test
//! command does that. A cluster is stopped and its directory removed when it is dropped.

pub mod fixtures;
pub mod installed;
pub mod receiver;
pub mod s3;

use postgres::{Client, NoTls};
use std::fs;
use std::io::{BufRead, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Longest wait for something the server does on its own (a worker tick, a restart).
pub const PATIENCE: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Directory of the server binaries: `$PG_BINDIR`, else PostgreSQL 15's Debian location.
pub fn bindir() -> PathBuf {
    std::env::var_os("PG_BINDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The extension's version: the root package's, which pgrx makes the default_version.
pub fn extension_version() -> String {
    let manifest = include_str!("../../Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("version in Cargo.toml")
        .to_string()
}

/// What the server's `pg_config` in [`bindir`] says for `option` (`--sharedir`, `--pkglibdir`).
pub fn pg_config(option: &str) -> PathBuf {
    let out = Command::new(bindir().join("pg_config"))
        .arg(option)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}/pg_config: {e}", bindir().display()));
    assert!(out.status.success(), "pg_config {option} failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A second major's server programs and its major, for tests across majors: PostgreSQL 18's
/// (as registered with pgrx by scripts/prereqs.sh) when [`bindir`] is 15, else Debian's 15.
/// admin_toolkit must be installed for it too (scripts/test.sh installs both).
pub fn other_major_bindir() -> (PathBuf, u32) {
    if server_major() != 15 {
        return (PathBuf::from("/usr/lib/postgresql/15/bin"), 15);
    }
    let home = std::env::var_os("PGRX_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgrx")))
        .expect("HOME or PGRX_HOME");
    let config = fs::read_to_string(home.join("config.toml")).expect("pgrx's config.toml");
    let pg_config = config
        .lines()
        .find_map(|l| l.strip_prefix("pg18 = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("PostgreSQL 18 registered with pgrx (scripts/prereqs.sh)");
    let bindir = Path::new(pg_config)
        .parent()
        .expect("pg_config's directory");
    (bindir.to_path_buf(), 18)
}

/// The major version of the server in [`bindir`] (15, 18…), from `postgres --version`.
pub fn server_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let out = Command::new(bindir().join("postgres"))
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/postgres: {e}", bindir().display()));
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 18.6"
        text.split_whitespace()
            .last()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no version in {text:?}"))
    })
}

/// Runs a server program as the postgres OS user (directly when not root) and returns its output.
pub fn run_as_postgres(program: &str, args: &[&str]) -> Output {
    run_as_postgres_with(&[], program, args)
}

/// [`run_as_postgres`] with `environment` added to the program's environment.
pub fn run_as_postgres_with(
    environment: &[(String, String)],
    program: &str,
    args: &[&str],
) -> Output {
    run_as_postgres_in(&bindir(), environment, program, args)
}

/// [`run_as_postgres_with`] with the server programs of `bindir` (another major's).
pub fn run_as_postgres_in(
    bindir: &Path,
    environment: &[(String, String)],
    program: &str,
    args: &[&str],
) -> Output {
    let exe = bindir.join(program);
    // A server unpacked elsewhere than where it was built may not find its own libpq (17.11
    // from PyPI has RUNPATH /opt/postgresql/lib, and the walreceiver then loads Debian's
    // older libpq): its programs get their lib directory first, as the build meant.
    let mut environment = environment.to_vec();
    let own_lib = bindir.join("../lib");
    if own_lib.join("libpq.so.5").exists()
        && !environment.iter().any(|(k, _)| k == "LD_LIBRARY_PATH")
    {
        environment.push((
            "LD_LIBRARY_PATH".into(),
            own_lib
                .canonicalize()
                .unwrap_or(own_lib)
                .display()
                .to_string(),
        ));
    }
    let environment = environment.as_slice();
    let mut cmd = if is_root() {
        // sudo resets the environment: env(1) sets it again on the other side.
        let mut c = Command::new("sudo");
        c.args(["-n", "-u", "postgres", "--", "env"]);
        c.args(environment.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(&exe);
        c
    } else {
        let mut c = Command::new(&exe);
        c.envs(environment.iter().map(|(k, v)| (k, v)));
        c
    };
    cmd.args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

/// The admin-toolkit binary: `$ADMIN_TOOLKIT_CLI`, else the workspace's debug build (built by
/// scripts/test.sh before the client tests).
pub fn cli_path() -> PathBuf {
    std::env::var_os("ADMIN_TOOLKIT_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/admin-toolkit")
        })
}

/// A copy of the admin-toolkit binary that the postgres OS user can execute: the checkout may
/// sit in a directory only root can enter (a clone in `mktemp -d`), and restore_command runs
/// the binary the server's user is given. One copy per build of the binary (named by its size
/// and modification time), shared by every test process: a copy per process filled /tmp.
pub fn cli_for_postgres() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        let built = fs::metadata(cli_path())
            .expect("admin-toolkit is built (cargo build -p admin-toolkit-cli)");
        let dir = std::env::temp_dir().join(format!(
            "admin_toolkit_cli_{}_{}_{}",
            built.len(),
            built.mtime(),
            built.mtime_nsec()
        ));
        let exe = dir.join("admin-toolkit");
        if exe.exists() {
            return exe;
        }
        // Copied aside, then renamed into place: a concurrent test process sees all or nothing.
        let staging = tempfile::Builder::new()
            .prefix("admin_toolkit_cli_staging_")
            .tempdir_in(std::env::temp_dir())
            .expect("temporary directory");
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod cli dir");
        let staged = staging.path().join("admin-toolkit");
        fs::copy(cli_path(), &staged).expect("copy admin-toolkit");
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod cli");
        match fs::rename(staging.path(), &dir) {
            Ok(()) => {
                let _moved = staging.keep();
            }
            // Another process renamed its copy first; ours is removed with `staging`.
            Err(_) if exe.exists() => {}
            Err(e) => panic!("cannot place {}: {e}", dir.display()),
        }
        exe
    })
}

/// Runs the admin-toolkit binary as the postgres OS user (as restore_command would).
pub fn run_cli_as_postgres(args: &[&str]) -> Output {
    run_cli_as_postgres_in(Path::new("/"), args)
}

/// Runs the admin-toolkit binary as the postgres OS user in directory `dir` (restore_command
/// runs in the data directory).
pub fn run_cli_as_postgres_in(dir: &Path, args: &[&str]) -> Output {
    run_cli_as_postgres_with(dir, &[], args)
}

/// Runs the admin-toolkit binary as the postgres OS user in `dir` with `environment` (and
/// nothing else of the caller's: sudo drops it).
pub fn run_cli_as_postgres_with(dir: &Path, environment: &[(&str, &str)], args: &[&str]) -> Output {
    let exe = cli_for_postgres();
    let mut cmd = if is_root() {
        let mut c = Command::new("sudo");
        c.args(["-n", "-u", "postgres", "--", "env"]);
        c.args(environment.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(exe);
        c
    } else {
        let mut c = Command::new(exe);
        c.envs(environment.iter().copied());
        c
    };
    cmd.args(args)
        .current_dir(dir)
        .output()
        .expect("run admin-toolkit")
}

fn check(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The lines a child writes to `stream`, as they come, read on a thread of their own that
/// keeps draining the pipe after the receiver is dropped (so the child never blocks on it).
pub fn child_lines(stream: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            let _receiver_may_be_gone = sender.send(line);
        }
    });
    receiver
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A scratch directory the postgres OS user owns; removed on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str) -> ScratchDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(std::env::temp_dir())
            .expect("temporary directory")
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod scratch dir");
        if is_root() {
            check(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&dir)
                    .output()
                    .expect("chown"),
                "chown scratch dir",
            );
        }
        ScratchDir { path: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> String {
        self.path.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ignored = fs::remove_dir_all(&self.path);
    }
}

/// Options of a new cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Load admin_toolkit through shared_preload_libraries.
    pub preload: bool,
    /// Extra postgresql.conf lines.
    pub settings: Vec<String>,
    /// TCP connections authenticate with scram-sha-256 (the superuser's password is
    /// [`SUPERUSER_PASSWORD`]); otherwise they are trusted.
    pub scram: bool,
    /// Environment variables of the server (every process it starts inherits them), e.g.
    /// `AWS_ACCESS_KEY_ID`.
    pub environment: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Preloaded, with WAL archived by admin_toolkit's archive module into `archive`.
    pub fn archiving_to(archive: &Path) -> ClusterOptions {
        let mut options = ClusterOptions::default();
        options.settings.extend([
            "archive_mode = on".into(),
            "archive_library = 'admin_toolkit'".into(),
            format!("admin_toolkit.archive_location = '{}'", archive.display()),
        ]);
        options
    }

    /// The worker and launcher also log each pass (log_min_messages = debug1), for
    /// [`Cluster::wait_for_passes`].
    pub fn logging_passes(mut self) -> ClusterOptions {
        self.settings.push("log_min_messages = debug1".into());
        self
    }

    /// A cluster without admin_toolkit in shared_preload_libraries.
    pub fn not_preloaded() -> ClusterOptions {
        ClusterOptions {
            preload: false,
            settings: vec![],
            scram: false,
            environment: vec![],
        }
    }
}

/// Password of the `postgres` superuser in every test cluster.
pub const SUPERUSER_PASSWORD: &str = "postgres-test-superuser";

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            preload: true,
            // Collections, and looks for due schedules (next_run set by hand) and dead jobs'
            // runs, every second: tests wait for seconds, not minutes.
            settings: vec![
                "admin_toolkit.collection_interval = 1".into(),
                "admin_toolkit.schedule_check_interval = 1".into(),
            ],
            scram: false,
            environment: vec![],
        }
    }
}

/// A running PostgreSQL cluster on 127.0.0.1.
pub struct Cluster {
    pub port: u16,
    scratch: ScratchDir,
    running: bool,
    environment: Vec<(String, String)>,
    /// The server programs it runs on: [`bindir`], or another major's.
    bindir: PathBuf,
}

impl Cluster {
    /// initdb + start with the default options (library preloaded, 1 s collection interval).
    pub fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default())
    }

    pub fn start_with(options: ClusterOptions) -> Cluster {
        Cluster::start_on(&bindir(), options)
    }

    /// [`Cluster::start_with`] on the server programs of `bindir` (another major's server,
    /// with admin_toolkit installed for it).
    pub fn start_on(bindir: &Path, options: ClusterOptions) -> Cluster {
        let scratch = ScratchDir::new("admin_toolkit_it_");
        let data = scratch.join("data");
        let pwfile = scratch.join("pwfile");
        fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write pwfile");
        let host_auth = if options.scram {
            "--auth-host=scram-sha-256"
        } else {
            "--auth-host=trust"
        };
        let initdb_args = [
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth-local=trust",
            host_auth,
            "--pwfile",
            &pwfile,
            "--no-sync",
            "-E",
            "UTF8",
        ];
        check(
            run_as_postgres_in(bindir, &[], "initdb", &initdb_args),
            "initdb",
        );
        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", scratch.path().display()),
            "fsync = off".into(),
            "log_line_prefix = '%m [%p] %b '".into(),
        ];
        if options.preload {
            conf.push("shared_preload_libraries = 'admin_toolkit'".into());
        }
        conf.extend(options.settings);
        Cluster::launch(scratch, port, &conf, options.environment, bindir)
    }

    /// A cluster over an existing data directory (e.g. one made by pg_basebackup), on a new port.
    pub fn from_data_dir(scratch: ScratchDir, extra: &[String]) -> Cluster {
        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", scratch.path().display()),
        ];
        conf.extend_from_slice(extra);
        // After what a restore wrote into postgresql.auto.conf, so that these settings win.
        Cluster::append_conf_to(&scratch.join("data"), "postgresql.auto.conf", &conf);
        Cluster::launch(scratch, port, &[], vec![], &bindir())
    }

    /// A streaming hot standby of `primary` (pg_basebackup -R), started with `extra` settings;
    /// it keeps the primary's postgresql.conf (archiving included), as a failover target does.
    pub fn standby_of(primary: &Cluster, extra: &[String]) -> Cluster {
        let scratch = ScratchDir::new("admin_toolkit_standby_");
        let data = scratch.join("data");
        let port = primary.port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            &data,
            "-R",
            "-X",
            "stream",
            "--no-sync",
        ];
        // A scram primary asks for the password; -R writes it into primary_conninfo.
        let password = [("PGPASSWORD".to_string(), SUPERUSER_PASSWORD.to_string())];
        check(
            run_as_postgres_with(&password, "pg_basebackup", &args),
            "pg_basebackup",
        );
        let mut conf = vec!["hot_standby = on".to_string()];
        conf.extend_from_slice(extra);
        Cluster::from_data_dir(scratch, &conf)
    }

    /// Appends `conf` to the data directory's postgresql.conf and starts the server.
    fn launch(
        scratch: ScratchDir,
        port: u16,
        conf: &[String],
        environment: Vec<(String, String)>,
        bindir: &Path,
    ) -> Cluster {
        Cluster::append_conf(&scratch.join("data"), conf);
        let mut cluster = Cluster {
            port,
            scratch,
            running: false,
            environment,
            bindir: bindir.to_path_buf(),
        };
        cluster.start_server(true);
        cluster
    }

    fn append_conf(data: &str, lines: &[String]) {
        Cluster::append_conf_to(data, "postgresql.conf", lines);
    }

    fn append_conf_to(data: &str, file: &str, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let path = Path::new(data).join(file);
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str("\n# admin_toolkit client tests\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {file}: {e}"));
    }

    pub fn data_dir(&self) -> String {
        self.scratch.join("data")
    }

    pub fn scratch(&self) -> &ScratchDir {
        &self.scratch
    }

    pub fn log_path(&self) -> String {
        self.scratch.join("server.log")
    }

    /// Starts the server. Its port was free when chosen, but another process may have taken it
    /// since (ports are picked, then bound by the server): at a first start the server says so
    /// and exits, and it is started again on another port. A restart keeps its port (standbys
    /// and connection strings may name it) and fails if it was taken.
    fn start_server(&mut self, first_start: bool) {
        for _ in 0..5 {
            let logged_before = fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
            let output = run_as_postgres_in(
                &self.bindir,
                &self.environment,
                "pg_ctl",
                &[
                    "-D",
                    &self.data_dir(),
                    "-l",
                    &self.log_path(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            let logged = fs::read(self.log_path()).unwrap_or_default();
            let port_taken = first_start
                && !output.status.success()
                && String::from_utf8_lossy(logged.get(logged_before..).unwrap_or_default())
                    .contains("Address already in use");
            if !port_taken {
                check(output, "pg_ctl start");
                self.running = true;
                return;
            }
            self.port = free_port();
            // postgresql.auto.conf is read last: this line wins over every earlier one.
            let line = format!("port = {}", self.port);
            Cluster::append_conf_to(&self.data_dir(), "postgresql.auto.conf", &[line]);
        }
        panic!(
            "pg_ctl start: five ports in a row were taken:\n{}",
            self.server_log()
        );
    }

    /// Stops the server (fast shutdown). Fails the test if it does not stop within `timeout`.
    pub fn stop_within(&mut self, timeout: Duration) {
        let secs = timeout.as_secs().max(1).to_string();
        check(
            run_as_postgres_in(
                &self.bindir,
                &[],
                "pg_ctl",
                &[
                    "-D",
                    &self.data_dir(),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    &secs,
                    "stop",
                ],
            ),
            "pg_ctl stop",
        );
        self.running = false;
    }

    pub fn restart(&mut self) {
        self.restart_with(|| {});
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: shared memory and WAL
    /// buffers are lost, no checkpoint) and starts it again, which runs crash recovery.
    pub fn crash_and_restart(&mut self) {
        self.crash();
        self.start_server(false);
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`), leaving it down.
    pub fn crash(&mut self) {
        check(
            run_as_postgres_in(
                &self.bindir,
                &[],
                "pg_ctl",
                &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
            ),
            "pg_ctl stop -m immediate",
        );
        self.running = false;
    }

    /// Stops the server, runs `offline` (e.g. to change its files), and starts it again.
    pub fn restart_with(&mut self, offline: impl FnOnce()) {
        self.stop_within(Duration::from_secs(60));
        offline();
        self.start_server(false);
    }

    /// Waits until `line` has been logged `passes` more times than so far: the pass that was
    /// under way when this was called may be one of them, so ask for two to see one whole pass
    /// begin and end. For "nothing happens twice": wait for the pass that would have done it,
    /// then look. The lines of [`duty_done`] need [`ClusterOptions::logging_passes`].
    pub fn wait_for_passes(&self, line: &str, passes: usize) {
        self.wait_for_log_count(line, self.log_count(line) + passes);
    }

    /// How many times the server has logged `line` so far.
    pub fn log_count(&self, line: &str) -> usize {
        occurrences(&self.server_log(), line)
    }

    /// Waits until the server has logged `line` at least `n` times in all.
    pub fn wait_for_log_count(&self, line: &str, n: usize) {
        wait_for(&format!("\"{line}\" logged {n} times"), || {
            (self.log_count(line) >= n).then_some(())
        });
    }

    /// Reloads the configuration and waits until a new session sees `name` set to `setting`
    /// (`None`: back to its built-in default), as a new job worker will.
    pub fn reload_until(&self, name: &str, setting: Option<&str>) {
        let mut db = self.connect("postgres");
        db.batch_execute("SELECT pg_reload_conf()").unwrap();
        wait_for(&format!("{name} = {setting:?} after the reload"), || {
            let mut fresh = self.connect("postgres");
            let row = fresh
                .query_one(
                    "SELECT setting, boot_val FROM pg_settings WHERE name = $1",
                    &[&name],
                )
                .unwrap();
            let (now, default): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            (now.as_deref() == setting.or(default.as_deref())).then_some(())
        });
    }

    /// Fails the test if a server process died of a signal (a crash: the postmaster then
    /// restarts every process), with the log.
    pub fn assert_no_crash(&self) {
        let log = self.server_log();
        assert!(!log.contains("terminated by signal"), "{log}");
    }

    /// The toolkit's failures in the server log: its lines with an ERROR or FATAL, a step
    /// failed and retried, or one of its processes exiting with an error code.
    pub fn our_failures(&self) -> Vec<String> {
        self.server_log()
            .lines()
            .filter(|l| {
                (l.contains("\"admin_toolkit")
                    && l.contains("exited with exit code")
                    && !l.ends_with("exit code 0"))
                    || (l.contains("admin_toolkit")
                        && (l.contains("FATAL")
                            || l.contains("ERROR")
                            || l.contains("failed and will be retried")))
            })
            .map(str::to_string)
            .collect()
    }

    /// Everything the server has logged so far.
    pub fn server_log(&self) -> String {
        // Lossy: a log line may quote bytes that are not UTF-8.
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Connection string for `dbname` as the postgres superuser.
    pub fn conninfo(&self, dbname: &str) -> String {
        self.conninfo_as(dbname, "postgres", SUPERUSER_PASSWORD)
    }

    /// Connection string for `dbname` as another role.
    pub fn conninfo_as(&self, dbname: &str, user: &str, password: &str) -> String {
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        format!(
            "host=127.0.0.1 port={} user={user} password='{quoted}' dbname={dbname} connect_timeout=10 \
             application_name=admin_toolkit_it",
            self.port
        )
    }

    /// Connects as another role; the error is returned, so failed logins can be tested.
    pub fn connect_as(
        &self,
        dbname: &str,
        user: &str,
        password: &str,
    ) -> Result<Client, postgres::Error> {
        Client::connect(&self.conninfo_as(dbname, user, password), NoTls)
    }

    pub fn connect(&self, dbname: &str) -> Client {
        Client::connect(&self.conninfo(dbname), NoTls)
            .unwrap_or_else(|e| panic!("connect to {dbname}: {e}"))
    }

    /// A connection that records every NOTICE/WARNING the server sends it.
    pub fn connect_collecting_notices(&self, dbname: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&notices);
        let mut config: postgres::Config = self.conninfo(dbname).parse().expect("conninfo");
        config.notice_callback(move |notice| {
            sink.lock()
                .expect("notice sink")
                .push(notice.message().to_string())
        });
        let client = config
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to {dbname}: {e}"));
        (client, notices)
    }

    /// Runs a client program (psql, pg_dump, pg_restore, ...) against this cluster.
    pub fn client_program(&self, program: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
        all.extend_from_slice(args);
        run_as_postgres_in(&self.bindir, &[], program, &all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ignored = run_as_postgres_in(
                &self.bindir,
                &[],
                "pg_ctl",
                &[
                    "-D",
                    &self.data_dir(),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "---- server log of the failed test ----\n{}",
                self.server_log()
            );
        }
    }
}

/// Polls `probe` until it returns `Some`, failing the test with `what` after [`PATIENCE`].
pub fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, PATIENCE, probe)
}

/// Like [`wait_for`], with a deadline of `patience`: for what may rightly take longer than
/// [`PATIENCE`] (a cron schedule waits for its minute, then its job starts).
pub fn wait_for_within<T>(
    what: &str,
    patience: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

/// Waits until the server `db` is connected to has left recovery (promoted).
pub fn wait_until_promoted(db: &mut Client) {
    wait_for("promotion", || {
        (!db.query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get::<_, bool>(0))
        .then_some(())
    });
}

/// The line the database worker logs at debug1 when a pass of the duty `name` is over.
pub fn duty_done(name: &str) -> String {
    format!("admin_toolkit worker: duty \"{name}\" done")
}

/// Count returned by a `SELECT count(*) ...` query.
/// Waits until the worker's first partition upkeep has made today's metrics partition. A row
/// inserted into performance_metrics while that upkeep creates it can fail (PostgreSQL routed it
/// to the default partition before the new partition's constraint applied), so tests that insert
/// metrics right after CREATE EXTENSION wait for this first.
pub fn wait_for_todays_partition(client: &mut Client) {
    wait_for("the worker's first partition upkeep", || {
        (count(
            client,
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = 'admin_toolkit'::regnamespace \
               AND relname = 'performance_metrics_p' || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD')",
        ) == 1)
            .then_some(())
    });
}

pub fn count(client: &mut Client, query: &str) -> i64 {
    client
        .query_one(query, &[])
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .get(0)
}

/// How many times `needle` occurs in the server log.
pub fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

mod security;
pub use security::{assert_secrets_nowhere, audit_count, secure_cluster, wait_for_audit};

mod backup;
pub use backup::{archive_now, drill_settings, write_key};
