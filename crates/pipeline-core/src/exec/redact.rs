//! Secrets never reach a step's log: the values of environment variables whose
//! names say they are secret (token, secret, password, key) are replaced by
//! `[redacted NAME]` in every line a job writes, its command's output and the
//! stage's own lines alike, and in the error its result file records.
//!
//! The job's standard output and error are moved onto a pipe whose reader
//! writes redacted lines to where they went before; the command inherits the
//! pipe, so its output passes the same filter.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::time::Duration;

/// Words that mark an environment variable's value as secret.
const SECRET_WORDS: [&str; 4] = ["TOKEN", "SECRET", "PASSWORD", "KEY"];
/// Values shorter than this are not redacted (`1`, `yes`): replacing them
/// everywhere would garble the log and hide nothing.
const MIN_SECRET_LEN: usize = 4;
/// A line longer than this is passed on in pieces.
const MAX_LINE: usize = 64 * 1024;

/// Whether a variable's name marks its value as secret.
pub fn is_secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| up.contains(w))
}

/// The secret values to take out of text, longest first.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<(String, Vec<u8>)>,
}

impl Redactor {
    /// The secrets of this process's environment.
    pub fn from_env() -> Redactor {
        Redactor::new(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            is_secret_name(&k).then(|| (k, v.into_encoded_bytes()))
        }))
    }

    pub fn new(vars: impl IntoIterator<Item = (String, Vec<u8>)>) -> Redactor {
        let mut secrets: Vec<(String, Vec<u8>)> = vars
            .into_iter()
            .filter(|(_, v)| v.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    fn longest(&self) -> usize {
        self.secrets.first().map_or(0, |s| s.1.len())
    }

    /// `bytes` with every secret value replaced.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (name, value) in &self.secrets {
            let mark = format!("[redacted {name}]").into_bytes();
            let mut next = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(value) {
                    next.extend_from_slice(&mark);
                    i += value.len();
                } else {
                    next.push(out[i]);
                    i += 1;
                }
            }
            out = next;
        }
        out
    }

    pub fn text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }
}

/// Standard output and error moved onto the redacting pipe; `finish` puts
/// them back and waits for the last line.
pub struct Capture {
    pub redactor: Redactor,
    saved: Option<(RawFd, RawFd)>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

/// Starts redacting this process's standard output and error when its
/// environment holds a secret; otherwise changes nothing.
pub fn capture() -> Capture {
    let redactor = Redactor::from_env();
    let none = Capture {
        redactor: redactor.clone(),
        saved: None,
        done: None,
    };
    if redactor.is_empty() {
        return none;
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let mut fds = [0 as RawFd; 2];
    // SAFETY: plain descriptor calls on descriptors this process owns; on any
    // failure the descriptors are left as they were.
    let saved = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return none;
        }
        let out = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        let err = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        let sink = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if out < 0 || err < 0 || sink < 0 || libc::dup2(fds[1], 1) < 0 || libc::dup2(fds[1], 2) < 0
        {
            if out >= 0 {
                libc::dup2(out, 1);
            }
            if err >= 0 {
                libc::dup2(err, 2);
            }
            for fd in [fds[0], fds[1], out, err, sink] {
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            return none;
        }
        libc::close(fds[1]);
        (out, err, sink)
    };
    let (saved, sink) = ((saved.0, saved.1), saved.2);
    // SAFETY: the read end and the sink (a duplicate of the old output) are
    // valid descriptors that this thread alone owns from here on.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut sink = unsafe { std::fs::File::from_raw_fd(sink) };
    let (tx, rx) = std::sync::mpsc::channel();
    let r = redactor.clone();
    std::thread::spawn(move || {
        let keep = r.longest().saturating_sub(1);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
                let rest = buf.split_off(end + 1);
                let _ = sink.write_all(&r.bytes(&buf));
                buf = rest;
            } else if buf.len() > MAX_LINE {
                // Pass a long line on, holding back its tail, where a secret
                // may have begun.
                let mut red = r.bytes(&buf);
                let tail = red.split_off(red.len().saturating_sub(keep));
                let _ = sink.write_all(&red);
                buf = tail;
            }
        }
        let _ = sink.write_all(&r.bytes(&buf));
        let _ = sink.flush();
        let _ = tx.send(());
    });
    Capture {
        redactor,
        saved: Some(saved),
        done: Some(rx),
    }
}

impl Capture {
    /// Puts standard output and error back and waits (at most 2 s: a process
    /// the command left behind may hold the pipe) for the redacted rest.
    pub fn finish(mut self) {
        let Some((out, err)) = self.saved.take() else {
            return;
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: restores the descriptors saved by `capture`.
        unsafe {
            libc::dup2(out, 1);
            libc::dup2(err, 2);
            libc::close(out);
            libc::close(err);
        }
        if let Some(rx) = self.done.take() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_by_their_names() {
        let r = Redactor::new([
            ("HF_TOKEN".to_string(), b"hf_abcdef".to_vec()),
            ("API_KEY".to_string(), b"k".to_vec()),
        ]);
        assert_eq!(
            r.text("token=hf_abcdef, again hf_abcdefhf_abcdef; k stays"),
            "token=[redacted HF_TOKEN], again [redacted HF_TOKEN][redacted HF_TOKEN]; k stays"
        );
        assert!(is_secret_name("hf_token") && is_secret_name("DB_PASSWORD"));
        assert!(!is_secret_name("HOME"));
    }
}
