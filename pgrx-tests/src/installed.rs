//! Tests that swap files of the PostgreSQL installation (an older build, a Debian package) keep
//! copies of what they replace and put them back, whatever happens, so that the tests after
//! them run against this checkout's build.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file's contents and mode.
type Kept = (Vec<u8>, u32);

/// Files as they were: contents and mode, or absent (removed again when put back).
pub struct Displaced {
    saved: Vec<(PathBuf, Option<Kept>)>,
    put_back: bool,
}

impl Displaced {
    pub fn save(files: &[PathBuf]) -> Displaced {
        let saved = files
            .iter()
            .map(|f| {
                let kept = fs::read(f)
                    .ok()
                    .zip(fs::metadata(f).ok().map(|m| m.permissions().mode()));
                (f.clone(), kept)
            })
            .collect();
        Displaced {
            saved,
            put_back: false,
        }
    }

    /// Restores every file now (once).
    pub fn put_back(&mut self) {
        if std::mem::replace(&mut self.put_back, true) {
            return;
        }
        for (path, kept) in &self.saved {
            match kept {
                Some((bytes, mode)) => {
                    if let Some(dir) = path.parent() {
                        let _ignored = fs::create_dir_all(dir);
                    }
                    if let Err(e) = replace_file(path, bytes, *mode) {
                        eprintln!("could not put back {}: {e}", path.display());
                    }
                }
                None => {
                    let _ignored = fs::remove_file(path);
                }
            }
        }
    }
}

impl Drop for Displaced {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// Writes `path` as a new file renamed into place, as dpkg and `cargo pgrx install` do: a
/// running server keeps the library it mapped (writing into the mapped file would change the
/// code under its feet).
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".admin_toolkit_it.new");
    let temporary = path.with_file_name(name);
    fs::write(&temporary, bytes)?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))?;
    fs::rename(&temporary, path)
}

/// Every file under `root`, as the absolute path it installs to (`root/usr/x` → `/usr/x`).
pub fn tree_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files
        .into_iter()
        .map(|f| Path::new("/").join(f.strip_prefix(root).expect("under root")))
        .collect()
}

/// Copies the tree at `root` into the file system (as `cargo pgrx install` would).
pub fn install_tree(root: &Path) {
    for target in tree_files(root) {
        let source = root.join(target.strip_prefix("/").unwrap());
        let bytes = fs::read(&source).unwrap();
        let mode = if target.extension().is_some_and(|e| e == "so") {
            0o755
        } else {
            0o644
        };
        replace_file(&target, &bytes, mode).unwrap_or_else(|e| {
            panic!("install {} (run the tests as root): {e}", target.display())
        });
    }
}
