//! Names that end up in paths, URLs and metric labels, checked by one rule each, the way
//! tough's `TargetName` checks target names before anything joins them to a directory:
//!
//! - [`ModelName`]: a model or alias name. The registry refuses to register any other, the
//!   agent refuses one in its configuration, and the verifier refuses a signed document that
//!   names one (the agent joins it into its data directory).
//! - [`check_file_name`]: the name of an artifact inside a version.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest model or alias name.
pub const MAX_MODEL_NAME: usize = 128;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The name as given.
    pub name: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// A model (or alias) name: 1 to 128 ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.`. Such a name is one path segment everywhere: never `.`/`..`, never a separator, a
/// drive prefix, a space or a control character.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    /// `name`, if it is a valid model name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let reason = if name.is_empty() || name.len() > MAX_MODEL_NAME {
            Some("must be 1 to 128 characters")
        } else if name.starts_with('.') {
            Some("must not start with '.'")
        } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            Some("may hold only ASCII letters, digits, '-', '_' and '.'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(NameError { name, reason }),
            None => Ok(ModelName(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        ModelName::new(name)
    }
}

impl FromStr for ModelName {
    type Err = NameError;
    fn from_str(name: &str) -> Result<Self, NameError> {
        ModelName::new(name)
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> String {
        name.0
    }
}

/// Refuses artifact file names that could leave the directory they are joined to: empty, over
/// 255 bytes, `.`/`..` or any leading `.`, path separators, `:` (drive or stream prefix), NUL,
/// or anything but printable ASCII without spaces.
pub fn check_file_name(name: &str) -> Result<(), NameError> {
    let refuse = |reason| Err(NameError { name: name.into(), reason });
    if name.is_empty() || name.len() > 255 {
        return refuse("must be 1 to 255 characters");
    }
    if name == "." || name == ".." {
        return refuse("is a directory reference");
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("contains a path separator");
    }
    if name.contains(':') {
        return refuse("contains ':' (drive or stream prefix)");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("must be printable ASCII without spaces");
    }
    if name.starts_with('.') {
        return refuse("must not start with '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use super::*;

    /// Names an attacker would try, for paths on Unix and Windows.
    const HOSTILE: &[&str] = &[
        "",
        ".",
        "..",
        "../etc",
        "..\\windows",
        "a/b",
        "a\\b",
        "/abs",
        "C:",
        "C:\\x",
        "file:stream",
        "nul\0",
        "tab\tname",
        "new\nline",
        "space name",
        ".hidden",
        "caf\u{e9}",
        "\u{202e}gnp.exe",
        "%2e%2e",
    ];

    #[test]
    fn hostile_names_are_refused_by_both_rules() {
        for name in HOSTILE {
            let refused_as_model = ModelName::new(*name).is_err();
            // `%2e%2e` is harmless as a file name (no decoding happens on disk) but not a model name.
            assert!(refused_as_model, "model name {name:?}");
            if *name != "%2e%2e" {
                assert!(check_file_name(name).is_err(), "file name {name:?}");
            }
        }
        assert!(ModelName::new("x".repeat(MAX_MODEL_NAME + 1)).is_err());
        assert!(check_file_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn every_accepted_name_is_one_normal_path_segment() {
        for name in ["iris", "iris-v2", "a.b_c", "A1", "model.onnx", "x".repeat(MAX_MODEL_NAME).as_str()] {
            let model = ModelName::new(name).expect("valid");
            assert!(check_file_name(name).is_ok(), "{name}");
            let joined = Path::new("/data/models").join(model.as_str());
            let components: Vec<Component<'_>> = joined.components().collect();
            assert_eq!(components.len(), 4, "{name} stays one segment: {joined:?}");
            assert!(matches!(components[3], Component::Normal(_)));
        }
    }

    #[test]
    fn deserializing_checks_the_rule() {
        let ok: ModelName = serde_json::from_str("\"iris\"").expect("valid");
        assert_eq!(ok.as_str(), "iris");
        let err = serde_json::from_str::<ModelName>("\"../x\"").expect_err("refused");
        assert!(err.to_string().contains("invalid name"), "{err}");
        assert_eq!(serde_json::to_string(&ok).expect("serializes"), "\"iris\"");
    }
}
