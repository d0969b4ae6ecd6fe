//! JSON state files (`keycloak.json`, `accounting.json`), written atomically.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads `path`; `Ok(None)` when it does not exist.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Writes `value` to `path` through a temporary file and a rename, so that a crash never
/// leaves a half-written file.
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(value).context("serialising the state")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// [`save`], logging instead of failing: used after changes made by a request or by a
/// programmatic call that cannot report an error.
pub(crate) fn save_or_warn<T: Serialize>(path: Option<&Path>, value: &T) {
    if let Some(path) = path
        && let Err(e) = save(path, value)
    {
        tracing::warn!(error = format!("{e:#}"), "could not save emulator state");
    }
}
