//! Validation in a child process: `edgefleet-controller validate-model` (this binary, a hidden
//! subcommand) limits its own address space, validates, and writes its answer as JSON on
//! stdout; the controller waits for it up to a deadline and kills it after. An engine that
//! allocates without bound (the allocation fails, the child aborts), never finishes, or
//! crashes only fails the push, with a 422 that says so.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::analytics::profile::ProfileOptions;
use serde::{Deserialize, Serialize};

use super::{BaselineData, Budget, Validated, ValidationError, validate};

/// Validates pushes in a child process running `exe validate-model`, limited to
/// `memory_bytes` of address space and `timeout`.
#[derive(Debug, Clone)]
pub struct Validator {
    /// The controller binary.
    pub exe: PathBuf,
    /// Address-space limit of the child.
    pub memory_bytes: u64,
    /// Deadline.
    pub timeout: Duration,
    /// Per-tensor budget.
    pub budget: Budget,
}

/// The child's answer on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Validated.
    Valid(Box<Validated>),
    /// Refused.
    Refused(ValidationError),
}

/// Arguments of `validate-model`, as the parent passes them.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// The model file.
    pub model: PathBuf,
    /// Reference data and whether it is `.npy` (else CSV).
    pub baseline: Option<(PathBuf, bool)>,
    /// Profile options.
    pub options: ProfileOptions,
    /// Per-tensor budget.
    pub budget: Budget,
    /// Address-space limit to apply to itself.
    pub memory_bytes: u64,
}

/// The child's side: limit this process, validate, return the answer to print.
pub fn run_child(args: &ChildArgs) -> Answer {
    let limit = rustix::process::Rlimit { current: Some(args.memory_bytes), maximum: Some(args.memory_bytes) };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::As, limit) {
        return Answer::Refused(ValidationError::Validator(format!("cannot limit the validator's memory: {e}")));
    }
    let baseline = match &args.baseline {
        Some((path, npy)) => match std::fs::read(path) {
            Ok(bytes) => Some(if *npy { BaselineData::Npy(bytes) } else { BaselineData::Csv(bytes) }),
            Err(e) => return Answer::Refused(ValidationError::Validator(format!("cannot read the baseline: {e}"))),
        },
        None => None,
    };
    match validate(&args.model, baseline.as_ref(), &args.options, &args.budget) {
        Ok(v) => Answer::Valid(Box::new(v)),
        Err(e) => Answer::Refused(e),
    }
}

impl Validator {
    /// Validates `model` (a file in `scratch`) with optional reference data.
    pub fn validate(
        &self,
        model: &Path,
        baseline: Option<&BaselineData>,
        options: &ProfileOptions,
        scratch: &Path,
    ) -> Result<Validated, ValidationError> {
        let staged = baseline
            .map(|b| {
                let (bytes, npy) = match b {
                    BaselineData::Csv(b) => (b, false),
                    BaselineData::Npy(b) => (b, true),
                };
                let file = tempfile::Builder::new()
                    .suffix(if npy { ".npy" } else { ".csv" })
                    .tempfile_in(scratch)
                    .and_then(|f| std::fs::write(f.path(), bytes).map(|()| f))
                    .map_err(|e| ValidationError::Validator(format!("cannot stage the baseline: {e}")))?;
                Ok::<_, ValidationError>((file, npy))
            })
            .transpose()?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("validate-model")
            .arg("--model")
            .arg(model)
            .args(["--bins", &options.bins.to_string(), "--sample-rows", &options.sample_rows.to_string()])
            .args(["--seed", &options.seed.to_string()])
            .args(["--max-tensor-bytes", &self.budget.max_tensor_bytes.to_string()])
            .args(["--memory-bytes", &self.memory_bytes.to_string()]);
        if let Some((file, npy)) = &staged {
            cmd.arg("--baseline").arg(file.path());
            if *npy {
                cmd.arg("--npy");
            }
        }
        run_isolated(cmd, self.memory_bytes, self.timeout)
    }
}

fn run_isolated(mut cmd: Command, memory_bytes: u64, timeout: Duration) -> Result<Validated, ValidationError> {
    let spawn = |e: std::io::Error| ValidationError::Validator(format!("cannot start the validator: {e}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(spawn)?;
    let mut stdout = child.stdout.take().ok_or_else(|| ValidationError::Validator("no stdout".into()))?;
    let mut stderr = child.stderr.take().ok_or_else(|| ValidationError::Validator("no stderr".into()))?;
    // Both pipes are drained meanwhile so a chatty child cannot block on a full pipe.
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(ValidationError::Validator(format!("cannot wait for the validator: {e}"))),
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let Some(status) = status else {
        metrics::counter!(crate::metric::VALIDATIONS, "result" => "timeout").increment(1);
        return Err(ValidationError::Budget(format!(
            "validation did not finish within {} s (registry.validation_timeout_secs)",
            timeout.as_secs()
        )));
    };
    match serde_json::from_slice::<Answer>(&out) {
        Ok(Answer::Valid(v)) if status.success() => {
            metrics::counter!(crate::metric::VALIDATIONS, "result" => "ok").increment(1);
            Ok(*v)
        }
        Ok(Answer::Refused(e)) => {
            metrics::counter!(crate::metric::VALIDATIONS, "result" => "refused").increment(1);
            Err(e)
        }
        _ => {
            metrics::counter!(crate::metric::VALIDATIONS, "result" => "crashed").increment(1);
            let last =
                String::from_utf8_lossy(&err).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_owned();
            tracing::warn!(%status, stderr = %last, "The model validator died.");
            Err(ValidationError::Budget(format!(
                "the validator died on this model ({status}{}); most likely it needs more than the {} MiB \\
                 allowed (registry.validation_memory_mb)",
                if last.is_empty() { String::new() } else { format!(": {last}") },
                memory_bytes >> 20
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validator_that_does_not_finish_is_killed_at_the_deadline() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let err = run_isolated(cmd, 1 << 30, Duration::from_millis(200)).expect_err("timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(&err, ValidationError::Budget(m) if m.contains("did not finish")), "{err}");
    }

    #[test]
    fn a_validator_that_dies_is_a_refusal_naming_its_last_words() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'memory allocation of 4398046511104 bytes failed' >&2; kill -ABRT $$"]);
        let err = run_isolated(cmd, 1 << 30, Duration::from_secs(10)).expect_err("crash");
        let text = err.to_string();
        assert!(text.contains("memory allocation") && text.contains("registry.validation_memory_mb"), "{text}");
    }
}
