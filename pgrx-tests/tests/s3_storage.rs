//! The storage suite every backend passes (core::storage::suite), here against a real
//! S3-compatible server, with the part size and retries of production.

use admin_toolkit_core::storage::{suite, Location, S3Storage, Storage, StorageError};
use admin_toolkit_it::s3::S3Server;
use admin_toolkit_it::ScratchDir;

#[test]
fn s3_storage_passes_the_shared_suite() {
    let server = S3Server::start();
    let scratch = ScratchDir::new("admin_toolkit_s3_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let settings = server.settings(&credentials);
    server.create_bucket(&settings, "suite-bucket");
    let Location::S3 { bucket, prefix } =
        Location::parse("s3://suite-bucket/some/prefix/").unwrap()
    else {
        unreachable!()
    };
    let storage = S3Storage::open(&bucket, &prefix, &settings).unwrap();
    suite::run(&storage);
    // The same bucket under another prefix is another storage.
    let other = S3Storage::open(&bucket, "other/", &settings).unwrap();
    other.put_new("x", b"1").unwrap();
    assert!(storage.list("").unwrap().is_empty());
}

#[test]
fn unreachable_or_unconfigured_s3_fails_clearly_and_keeps_secrets_out_of_messages() {
    let server = S3Server::start();
    let scratch = ScratchDir::new("admin_toolkit_s3_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let mut settings = server.settings(&credentials);
    server.create_bucket(&settings, "b-1");
    // a missing bucket
    let storage = S3Storage::open("no-such-bucket", "", &settings).unwrap();
    let err = storage.put_new("x", b"1").unwrap_err().to_string();
    assert!(err.contains("no-such-bucket"), "{err}");
    // no credentials at all
    settings.credentials_file = scratch.join("missing");
    let err = match S3Storage::open("b-1", "", &settings) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened without credentials"),
    };
    assert!(err.contains("credentials"), "{err}");
    // nothing listening: retried, then a clear error
    let mut down = server.settings(&credentials);
    down.endpoint = format!("http://127.0.0.1:{}", admin_toolkit_it::free_port());
    let storage = S3Storage::open("b-1", "", &down).unwrap();
    let err = storage.get("x").unwrap_err();
    assert!(matches!(err, StorageError::Io(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("attempts"), "{message}");
    assert!(!message.contains(admin_toolkit_it::s3::SECRET_KEY));
    assert!(
        !message.contains(admin_toolkit_it::s3::ACCESS_KEY),
        "no signed URL in messages: {message}"
    );
    assert!(!message.contains("X-Amz-Signature"), "{message}");
}

#[test]
fn s3_over_tls_with_a_private_ca_passes_the_suite_and_refuses_an_untrusted_server() {
    let scratch = ScratchDir::new("admin_toolkit_s3tls_");
    let server = S3Server::start_tls(scratch.path());
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let settings = server.settings(&credentials);
    assert!(settings.endpoint.starts_with("https://"));
    server.create_bucket(&settings, "tls-bucket");
    let storage = S3Storage::open("tls-bucket", "p/", &settings).unwrap();
    suite::run(&storage);
    // Without the CA, the server's certificate is not trusted: a clear error, no data sent.
    let mut untrusted = settings.clone();
    untrusted.ca_file = String::new();
    let storage = S3Storage::open("tls-bucket", "p/", &untrusted).unwrap();
    let err = storage.put_new("x", b"1").unwrap_err().to_string();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(!err.contains(admin_toolkit_it::s3::ACCESS_KEY), "{err}");
}

/// An upload left open by a process that died (here: a writer forgotten mid-upload, which
/// never aborts) is found and aborted, under its prefix only; boto3 lists what is left.
#[test]
fn unfinished_uploads_of_a_dead_writer_are_aborted_under_their_prefix_only() {
    let server = S3Server::start();
    let scratch = ScratchDir::new("admin_toolkit_s3_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let settings = server.settings(&credentials);
    server.create_bucket(&settings, "uploads");
    let dead = S3Storage::open("uploads", "pg/backup_1/", &settings).unwrap();
    let other = S3Storage::open("uploads", "pg/backup_2/", &settings).unwrap();
    let chunk = vec![7u8; (16 << 20) + 1]; // more than one part (PART_SIZE)
    for storage in [&dead, &other] {
        let mut writer = storage.writer("data.pack").unwrap();
        writer.write(&chunk).unwrap(); // the first part goes up: the upload is open
        std::mem::forget(writer); // as if the process had been killed
    }
    let mut open = server.open_uploads("uploads");
    open.sort();
    assert_eq!(open, ["pg/backup_1/data.pack", "pg/backup_2/data.pack"]);
    assert_eq!(dead.abort_uploads("").unwrap(), 1);
    assert_eq!(server.open_uploads("uploads"), ["pg/backup_2/data.pack"]);
    assert_eq!(dead.abort_uploads("").unwrap(), 0);
}

/// The suite again, against s3s-fs, which checks every request's SigV4 signature (moto
/// accepts any): the toolkit's requests are signed as AWS expects, multipart uploads and
/// conditional writes included.
#[test]
fn the_suite_passes_on_a_server_that_checks_signatures() {
    let server = S3Server::start_signing();
    let scratch = ScratchDir::new("admin_toolkit_s3s_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    let settings = server.settings(&credentials);
    server.create_bucket(&settings, "signed-bucket");
    let storage = S3Storage::open("signed-bucket", "some/prefix/", &settings).unwrap();
    suite::run(&storage);
    // Read back by boto3, signed by the AWS SDK: what the toolkit stored is what S3 holds.
    storage.put_new("proof", b"signed bytes").unwrap();
    assert_eq!(
        server.object("signed-bucket", "some/prefix/proof"),
        b"signed bytes"
    );
}

/// Buckets addressed virtual-host style (`bucket.localhost`), AWS's default: the suite passes
/// and boto3, addressing the same bucket path style, reads what was stored.
#[test]
fn the_suite_passes_with_virtual_host_style_addressing() {
    let server = S3Server::start_signing_virtual_host();
    let scratch = ScratchDir::new("admin_toolkit_s3vh_");
    let credentials = S3Server::write_credentials(&scratch.join("credentials"));
    server.create_bucket(&server.settings(&credentials), "hosted-bucket");
    let settings = server.virtual_host_settings(&credentials);
    let storage = S3Storage::open("hosted-bucket", "vh/", &settings).unwrap();
    suite::run(&storage);
    storage.put_new("proof", b"virtual host").unwrap();
    assert_eq!(server.object("hosted-bucket", "vh/proof"), b"virtual host");
}

/// A wrong secret, or a key the server does not know, is refused as AWS refuses it, with a
/// message that names the refusal and holds no secret.
#[test]
fn wrong_credentials_are_refused_by_a_server_that_checks_signatures() {
    let server = S3Server::start_signing();
    let scratch = ScratchDir::new("admin_toolkit_s3s_");
    let good = S3Server::write_credentials(&scratch.join("good"));
    server.create_bucket(&server.settings(&good), "signed-bucket");
    for (name, key, secret, expected) in [
        (
            "wrong-secret",
            admin_toolkit_it::s3::ACCESS_KEY,
            "not-the-secret-at-all",
            "SignatureDoesNotMatch",
        ),
        (
            "unknown-key",
            "AKIAUNKNOWN",
            admin_toolkit_it::s3::SECRET_KEY,
            // s3s-fs's code for a key it does not know (AWS says InvalidAccessKeyId).
            "NotSignedUp",
        ),
    ] {
        let file = scratch.join(name);
        std::fs::write(
            &file,
            format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
        let storage = S3Storage::open("signed-bucket", "", &server.settings(&file)).unwrap();
        let err = storage.put_new("x", b"1").unwrap_err().to_string();
        // A HEAD's refusal has no body to name the code; the status says it.
        assert!(err.contains("HTTP 403"), "{name}: {err}");
        assert!(!err.contains(secret), "{name}: the secret in {err}");
        // A GET's refusal names S3's code.
        let listed = storage.list("").unwrap_err().to_string();
        assert!(
            listed.contains("HTTP 403") && listed.contains(expected),
            "{name}: {listed}"
        );
        assert!(!listed.contains(secret), "{name}: the secret in {listed}");
    }
    // Nothing was written by the refused requests.
    assert!(server.objects("signed-bucket", "").is_empty());
}
