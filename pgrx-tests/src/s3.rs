//! A real S3-compatible server for the tests: moto's standalone server (installed by
//! scripts/prereqs.sh), started on 127.0.0.1 on a free port, stopped when dropped. Not a mock of
//! our own client: the requests are real HTTP, signed as for AWS.

use crate::free_port;
use admin_toolkit_core::storage::{S3Settings, S3Storage};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/prereqs.sh installs moto's server; ADMIN_TOOLKIT_MOTO_SERVER overrides it.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("ADMIN_TOOLKIT_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/admin_toolkit-test/venv/bin/moto_server"))
}

/// The access key and secret every test uses (moto accepts any).
pub const ACCESS_KEY: &str = "admin-toolkit-test-key";
pub const SECRET_KEY: &str = "admin-toolkit-test-secret";

pub struct S3Server {
    pub port: u16,
    child: Child,
}

impl S3Server {
    pub fn start() -> S3Server {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "the S3-compatible test server is missing at {} (run scripts/prereqs.sh)",
            path.display()
        );
        let port = free_port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let server = S3Server { port, child };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings for this server, with the test credentials in `credentials_file`.
    pub fn settings(&self, credentials_file: &str) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials_file: credentials_file.into(),
            profile: String::new(),
        }
    }

    /// The AWS shared-credentials file text for the test credentials.
    pub fn credentials_text() -> String {
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
    }

    pub fn create_bucket(&self, settings: &S3Settings, name: &str) {
        S3Storage::create_bucket(name, settings)
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}
