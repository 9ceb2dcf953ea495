//! The errors a caller matches on when a media file cannot be used.

use std::path::PathBuf;

/// Why a media file could not be decoded, muxed or encoded.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The container could not be opened (missing, zero-length, not media).
    #[error("{path}: cannot open as media ({reason}); check that the file exists and is a complete audio/video file")]
    Open { path: PathBuf, reason: String },
    /// The file has no stream of the kind the caller needs.
    #[error("{path}: has no {kind} stream")]
    NoStream { path: PathBuf, kind: &'static str },
    /// The stream exists but nothing (or not enough) could be decoded from it.
    #[error("{path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// The file opens but holds less than its headers declare, or too many of
    /// its packets cannot be read or decoded.
    #[error("{path}: {reason} (download or copy the file again)")]
    Truncated { path: PathBuf, reason: String },
    /// Writing a media file failed.
    #[error("{path}: cannot write media ({reason})")]
    Write { path: PathBuf, reason: String },
}

impl MediaError {
    pub(crate) fn open(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        MediaError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn decode(path: &std::path::Path, reason: impl Into<String>) -> Self {
        MediaError::Decode {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn write(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        MediaError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}
