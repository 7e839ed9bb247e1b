//! A real S3-compatible server for the tests: moto's standalone server (installed by
//! scripts/prereqs.sh), started on 127.0.0.1 on a port it picks and reports, stopped when
//! dropped. Not a mock of our own client: the requests are real HTTP, signed as for AWS.

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

/// Where scripts/prereqs.sh installs s3s-fs, an S3 server that checks every request's
/// signature; ADMIN_TOOLKIT_S3S_FS overrides it.
pub fn s3s_fs_path() -> PathBuf {
    std::env::var_os("ADMIN_TOOLKIT_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/admin_toolkit-test/bin/s3s-fs"))
}

/// The access key and secret every test uses (moto accepts any; s3s-fs is started with them
/// and refuses any other).
pub const ACCESS_KEY: &str = "admin-toolkit-test-key";
pub const SECRET_KEY: &str = "admin-toolkit-test-secret";

pub struct S3Server {
    pub port: u16,
    child: Child,
    /// With TLS: the CA certificate (PEM) that signed the server's certificate.
    pub ca_file: Option<String>,
    /// s3s-fs's data directory, removed with the server.
    _root: Option<tempfile::TempDir>,
}

/// Makes a CA and a certificate it signs for 127.0.0.1 in `dir` (openssl); returns the CA file,
/// the certificate and its key.
fn make_certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("server.key"),
        path("server.csr"),
        path("server.pem"),
        path("server.ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=admin_toolkit test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}

/// The port a server `name` says it listens on, in a line of `lines` with `marker` before
/// its URL; fails at once, with what it said, if the child exits first.
fn port_said(
    child: &mut Child,
    lines: &std::sync::mpsc::Receiver<String>,
    marker: &str,
    name: &str,
) -> u16 {
    port_said_or_exit(child, lines, marker, name).unwrap_or_else(|e| panic!("{e}"))
}

/// [`port_said`], with the child's exit before it listened (a port taken) as an error.
fn port_said_or_exit(
    child: &mut Child,
    lines: &std::sync::mpsc::Receiver<String>,
    marker: &str,
    name: &str,
) -> Result<u16, String> {
    let mut said = Vec::new();
    let started = Instant::now();
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let clean: String = line.chars().filter(|c| !c.is_control()).collect();
                if let Some(port) = clean
                    .split(marker)
                    .nth(1)
                    .and_then(|url| url.trim().rsplit(':').next())
                    .and_then(|p| {
                        p.trim_end_matches(|c: char| !c.is_ascii_digit())
                            .parse::<u16>()
                            .ok()
                    })
                {
                    return Ok(port);
                }
                said.push(clean);
            }
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    return Err(format!(
                        "{name} exited ({status}) before listening:\n{}",
                        said.join("\n")
                    ));
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} did not say where it listens:\n{}",
            said.join("\n")
        );
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::launch(&[], None)
    }

    /// Served over TLS with a certificate of a private CA made in `dir` (see `ca_file`).
    pub fn start_tls(dir: &std::path::Path) -> S3Server {
        let (ca, cert, key) = make_certificates(dir);
        S3Server::launch(&["-c", &cert, "-k", &key], Some(ca))
    }

    /// s3s-fs (crates.io, installed by scripts/prereqs.sh): an S3 server that checks each
    /// request's SigV4 signature against [`ACCESS_KEY`] and [`SECRET_KEY`], as AWS does, so a
    /// wrong signature or key fails here as it would there. It stores objects as files in a
    /// directory of its own and says where it listens ("server is running at …").
    pub fn start_signing() -> S3Server {
        S3Server::spawn_s3s_fs(0, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`S3Server::start_signing`], also serving buckets virtual-host style at
    /// `<bucket>.localhost:<port>` (see [`S3Server::virtual_host_settings`]). s3s-fs matches
    /// the Host header, port included, so the port is chosen first: if another process takes
    /// it meanwhile, s3s-fs exits at once and another port is tried.
    pub fn start_signing_virtual_host() -> S3Server {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = crate::free_port();
            match S3Server::spawn_s3s_fs(port, Some(&format!("localhost:{port}"))) {
                Ok(server) => return server,
                Err(e) => failures.push(e),
            }
        }
        panic!("s3s-fs did not start: {failures:?}");
    }

    fn spawn_s3s_fs(port: u16, domain: Option<&str>) -> Result<S3Server, String> {
        let path = s3s_fs_path();
        assert!(
            path.exists(),
            "the signature-checking S3 test server is missing at {} (run scripts/prereqs.sh)",
            path.display()
        );
        let root = tempfile::tempdir().unwrap();
        let mut command = Command::new(&path);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]);
        if let Some(domain) = domain {
            command.args(["--domain", domain]);
        }
        let mut child = command
            .arg(root.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let lines = crate::child_lines(child.stdout.take().unwrap());
        let port = port_said_or_exit(&mut child, &lines, "server is running at ", "s3s-fs")?;
        Ok(S3Server {
            port,
            child,
            ca_file: None,
            _root: Some(root),
        })
    }

    fn launch(extra: &[&str], ca_file: Option<String>) -> S3Server {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "the S3-compatible test server is missing at {} (run scripts/prereqs.sh)",
            path.display()
        );
        // Port 0: the server takes a free port itself and says which ("Running on …:PORT"), so
        // no other process can take it between our choice and its bind.
        let mut child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let lines = crate::child_lines(child.stderr.take().unwrap());
        let port = port_said(&mut child, &lines, "Running on ", "moto_server");
        let started = Instant::now();
        let server = S3Server {
            port,
            child,
            ca_file,
            _root: None,
        };
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not accept connections on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Settings for this server, with the test credentials in `credentials_file`.
    pub fn settings(&self, credentials_file: &str) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            force_path_style: true,
            credentials_file: credentials_file.into(),
            profile: String::new(),
            ca_file: self.ca_file.clone().unwrap_or_default(),
            timeout_seconds: 0,
        }
    }

    /// Settings addressing buckets virtual-host style, as AWS does by default: requests go to
    /// `http://<bucket>.localhost:<port>` (names under localhost are the loopback interface).
    /// Only [`S3Server::start_signing_virtual_host`] serves them.
    pub fn virtual_host_settings(&self, credentials_file: &str) -> S3Settings {
        S3Settings {
            endpoint: format!("http://localhost:{}", self.port),
            force_path_style: false,
            ..self.settings(credentials_file)
        }
    }

    /// Writes the test credentials as an AWS shared-credentials file at `path`; returns it.
    pub fn write_credentials(path: &str) -> String {
        std::fs::write(path, S3Server::credentials_text()).unwrap();
        path.to_string()
    }

    /// The AWS shared-credentials file text for the test credentials.
    pub fn credentials_text() -> String {
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
    }

    /// Runs `body` (Python, with `s3` a boto3 client of this server) in the test virtualenv:
    /// the AWS SDK for Python, an oracle independent of the toolkit's own client. Its stdout.
    fn boto3(&self, body: &str) -> Vec<u8> {
        let script = format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                aws_access_key_id='{ACCESS_KEY}', aws_secret_access_key='{SECRET_KEY}', \
                verify={})\n{body}",
            self.endpoint(),
            self.ca_file
                .as_ref()
                .map_or("True".to_string(), |ca| format!("'{ca}'"))
        );
        let out = Command::new("/opt/admin_toolkit-test/venv/bin/python")
            .args(["-c", &script])
            .output()
            .expect("run boto3 from the test virtualenv");
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Keys of the objects under `prefix` in `bucket`, as boto3 lists them.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto3(&format!(
            "for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       print(o['Key'])\n"
        ));
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The bytes of object `key` in `bucket`, as boto3 reads them.
    pub fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.boto3(&format!(
            "sys.stdout.buffer.write(s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read())\n"
        ))
    }

    /// Keys of the unfinished multipart uploads in `bucket`, as boto3 (the AWS SDK for Python,
    /// in the test virtualenv) lists them: an oracle independent of the toolkit's client.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self.boto3(&format!(
            "for u in s3.list_multipart_uploads(Bucket='{bucket}').get('Uploads', []):\n    print(u['Key'])\n"
        ));
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
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
