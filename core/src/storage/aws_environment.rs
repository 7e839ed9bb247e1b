//! The AWS SDKs' environment variables and shared files, as an AWS user expects them honoured,
//! below the toolkit's own settings and flags: whatever a setting or flag names wins, an empty
//! one is filled from `AWS_*` variables, then from the profile's section of the config file.
//! Credentials follow the SDKs' order: a credentials file the toolkit names, else
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, else the shared credentials file, else the
//! config file's profile.

use super::S3Settings;
use std::collections::HashMap;
use std::path::Path;

/// The `key = value` lines of `[section]` (credentials file) or `[profile section]` (config
/// file; `[default]` in both) of an AWS INI file.
pub fn ini_section(text: &str, profile: &str) -> HashMap<String, String> {
    let mut found = HashMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            inside = name == profile
                || name
                    .strip_prefix("profile ")
                    .is_some_and(|n| n.trim() == profile);
            continue;
        }
        if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            found.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    found
}

impl S3Settings {
    /// These settings with what they leave empty taken from the process's environment.
    pub fn with_aws_environment(self) -> S3Settings {
        self.with_environment(&|name| std::env::var(name).ok())
    }

    pub(crate) fn with_environment(mut self, var: &dyn Fn(&str) -> Option<String>) -> S3Settings {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home_file = |name: &str| var("HOME").map(|h| format!("{h}/.aws/{name}"));
        if self.profile.is_empty() {
            self.profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        }
        let config_file = var("AWS_CONFIG_FILE").or_else(|| home_file("config"));
        let config = config_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|text| ini_section(&text, &self.profile))
            .unwrap_or_default();
        let from_config = |key: &str| config.get(key).filter(|v| !v.is_empty()).cloned();
        let fill = |field: &mut String, sources: &[Option<String>]| {
            if field.is_empty() {
                if let Some(v) = sources.iter().flatten().next() {
                    *field = v.clone();
                }
            }
        };
        fill(
            &mut self.endpoint,
            &[
                var("AWS_ENDPOINT_URL_S3"),
                var("AWS_ENDPOINT_URL"),
                from_config("endpoint_url"),
            ],
        );
        fill(
            &mut self.region,
            &[
                var("AWS_REGION"),
                var("AWS_DEFAULT_REGION"),
                from_config("region"),
            ],
        );
        fill(
            &mut self.ca_file,
            &[var("AWS_CA_BUNDLE"), from_config("ca_bundle")],
        );
        if self.credentials_file.is_empty() && var("AWS_ACCESS_KEY_ID").is_none() {
            let shared = var("AWS_SHARED_CREDENTIALS_FILE").or_else(|| home_file("credentials"));
            let config_has_keys = config.contains_key("aws_access_key_id");
            self.credentials_file = shared
                .filter(|f| Path::new(f).exists())
                .or(config_file.filter(|_| config_has_keys))
                .unwrap_or_default();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn sections_of_credentials_and_config_files() {
        let text = "[default]\nregion = eu-west-1\n[profile backup]\nregion=us-east-2\nendpoint_url = http://minio:9000\n[backup2]\nregion = x\n";
        assert_eq!(ini_section(text, "default")["region"], "eu-west-1");
        assert_eq!(
            ini_section(text, "backup")["endpoint_url"],
            "http://minio:9000"
        );
        assert_eq!(ini_section(text, "backup2")["region"], "x");
        assert!(ini_section(text, "none").is_empty());
    }

    #[test]
    fn the_toolkit_settings_win_then_variables_then_the_config_file() {
        let dir = std::env::temp_dir().join(format!("aws_env_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config");
        std::fs::write(
            &config,
            "[profile ops]\nregion = ap-south-1\nendpoint_url = http://cfg:9000\nca_bundle = /cfg.pem\naws_access_key_id = A\naws_secret_access_key = S\n",
        )
        .unwrap();
        let config = config.to_string_lossy().into_owned();
        let env = environment(&[
            ("AWS_PROFILE", "ops"),
            ("AWS_CONFIG_FILE", &config),
            ("AWS_ENDPOINT_URL", "http://generic:9000"),
            ("AWS_ENDPOINT_URL_S3", "http://s3-only:9000"),
            ("AWS_DEFAULT_REGION", "eu-north-1"),
            ("HOME", "/nonexistent"),
        ]);
        let s = S3Settings::default().with_environment(&env);
        assert_eq!(s.profile, "ops");
        assert_eq!(
            s.endpoint, "http://s3-only:9000",
            "the S3-specific variable first"
        );
        assert_eq!(s.region, "eu-north-1");
        assert_eq!(s.ca_file, "/cfg.pem", "from the profile's section");
        assert_eq!(
            s.credentials_file, config,
            "keys from the config file's profile"
        );
        let own = S3Settings {
            endpoint: "http://own:1".into(),
            region: "own".into(),
            ..S3Settings::default()
        }
        .with_environment(&env);
        assert_eq!(
            (own.endpoint.as_str(), own.region.as_str()),
            ("http://own:1", "own")
        );
        // Keys in the environment come before any file, as in the SDKs.
        let keys = environment(&[
            ("AWS_ACCESS_KEY_ID", "K"),
            ("AWS_CONFIG_FILE", &config),
            ("AWS_PROFILE", "ops"),
        ]);
        assert_eq!(
            S3Settings::default()
                .with_environment(&keys)
                .credentials_file,
            ""
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
