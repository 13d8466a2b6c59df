//! `laplace-lora fetch-data [NAME...]`: the paper's datasets into the cache (DESIGN.md section 5),
//! with a progress bar, and a table of what is there.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use laplace_lora::data::known::{self, FetchOptions, Resolved};
use laplace_lora::model::FetchProgress;
use std::time::Duration;

pub fn run(names: &[String], list: bool) -> Result<i32> {
    let cache = known::cache_dir()?;
    if list {
        print_list();
        return Ok(0);
    }
    let names: Vec<String> = if names.is_empty() { known::default_names().into_iter().map(String::from).collect() } else { names.to_vec() };
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    let b = bar.clone();
    let mut progress = move |p: FetchProgress| match p {
        FetchProgress::Stage(s) => {
            let short: String = s.chars().take(110).collect();
            b.set_message(short)
        }
        FetchProgress::Bytes { done, total } => match total {
            Some(t) => b.set_message(format!("{:.1} of {:.1} MB", done as f64 / 1e6, t as f64 / 1e6)),
            None => b.set_message(format!("downloading: {:.1} MB so far", done as f64 / 1e6)),
        },
    };
    let got = known::fetch_all(&cache, &names, &FetchOptions::from_env(), &mut progress);
    bar.finish_and_clear();
    let got = got?;
    print_table(&got);
    println!("cache: {}", cache.join("datasets").display());
    Ok(0)
}

fn licence(r: &Resolved) -> &'static str {
    if r.name.is_mmlu() {
        known::MMLU_LICENCE
    } else {
        r.name
            .units
            .first()
            .and_then(|u| match u {
                known::Unit::Task(t) => known::task(t).map(|k| k.licence),
                known::Unit::Mmlu(_) => None,
            })
            .unwrap_or("")
    }
}

fn print_table(got: &[Resolved]) {
    println!("{:<22} {:>6} {:<40} {:<14} origin", "dataset", "parts", "items per split", "licence");
    for r in got {
        let mut splits: Vec<(String, usize)> = Vec::new();
        for u in &r.units {
            for (s, f) in &u.manifest.splits {
                match splits.iter_mut().find(|(n, _)| n == s) {
                    Some((_, c)) => *c += f.rows,
                    None => splits.push((s.clone(), f.rows)),
                }
            }
        }
        let per: Vec<String> = splits.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let origin = r.units.first().map(|u| u.manifest.origin.as_str()).unwrap_or("");
        println!("{:<22} {:>6} {:<40} {:<14} {origin}", r.name.name, r.units.len(), per.join(", "), licence(r));
    }
}

fn print_list() {
    println!("known datasets (a data path may name them; `fetch-data NAME` caches them):");
    for t in known::TASKS {
        let state = if known::cached(t.name).is_some() { "cached" } else { "not cached" };
        println!("  {:<16} {:<18} {:<14} {state}", t.name, t.title, t.licence);
    }
    let n = known::MMLU_SUBJECTS.iter().filter(|(s, _)| known::cached(&format!("mmlu:{s}")).is_some()).count();
    println!("  {:<16} {:<18} {:<14} {n} of 57 subjects cached", "mmlu", "MMLU", known::MMLU_LICENCE);
    println!("  mmlu:SUBJECT, e.g. mmlu:college_physics; groups mmlu:{}", known::MMLU_GROUPS.join(", mmlu:"));
}
